# devbox's config file (~/.config/devbox/config.toml) from Nix: the options both modules share,
# and the pure function from them to the file's tables (see devbox/config.py for the keys).
#
# Secrets never enter the Nix store: the GitHub App key and the Tailscale auth key are given as
# references (file:/run/secrets/..., op://vault/item/field, env:NAME) that devbox resolves at
# run time. `checks` refuses a literal PEM key or tskey-... anywhere in the rendered file.
#
# Only `lib.mkOption` and `lib.types` are used here, so nix/tests/stub-lib.nix can evaluate it
# without nixpkgs. Every option defaults to null: unset keys are left out and devbox's own
# default applies.
{ lib }:
let
  inherit (lib) mkOption types;
  opt = type: description: mkOption { type = types.nullOr type; default = null; inherit description; };
  reference = "a secret reference: file:PATH, op://VAULT/ITEM/FIELD or env:NAME (never the secret itself)";

  # Drop null values and tables left empty.
  clean = attrs:
    let
      kept = builtins.filter (n: attrs.${n} != null && attrs.${n} != { }) (builtins.attrNames attrs);
    in
    builtins.listToAttrs (map (n: { name = n; value = attrs.${n}; }) kept);

  recursiveMerge = a: b:
    a // builtins.mapAttrs
      (n: v: if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) then recursiveMerge a.${n} v else v)
      b;

  # Every string in a value, however deeply nested.
  strings = v:
    if builtins.isString v then [ v ]
    else if builtins.isList v then builtins.concatLists (map strings v)
    else if builtins.isAttrs v then builtins.concatLists (map strings (builtins.attrValues v))
    else [ ];

  isReference = s: builtins.match "(file:.+|op://.+|env:[A-Za-z_][A-Za-z0-9_]*)" s != null;
  has = needle: s: builtins.match ".*${needle}.*" s != null;
in
rec {
  options = {
    maxDrones = opt types.ints.unsigned "max_drones: how many drones may exist at once (0: no limit).";
    flavor = opt (types.enum [ "plain" "zerg" ]) "flavor: \"zerg\" makes a few messages speak the swarm's language.";
    drone = {
      image = opt types.str "[drone] image: the default drone image.";
      cpus = opt types.number "[drone] cpus: the default CPU limit.";
      memory = opt types.str "[drone] memory: the default memory limit, such as \"8g\".";
      syncthing = opt types.bool "[drone] syncthing: run Syncthing in new drones.";
      "with" = opt (types.listOf types.str) "[drone] with: optional services every new drone runs (see the README).";
      env = opt (types.attrsOf types.str) "[drone] env: environment for every drone (no secrets: it is in the unit file).";
      keys = opt (types.listOf types.str) "[drone] keys: model API keys ([keys.NAME] of the config) every new drone gets.";
      egress = opt types.str "[drone] egress: new drones' network policy: open, fenced (the default) or allow:HOST[:PORT],...";
    };
    keys = opt (types.attrsOf (types.attrsOf types.str)) "[keys.NAME]: model API keys the key proxy sets, one table each: secret (${reference}), upstream, header, prefix, ... (see the README's Model API keys).";
    github = {
      appId = opt types.str "[github] app_id: the GitHub App's numeric id or client id (Iv...).";
      privateKey = opt types.str "[github] private_key: the App's key as ${reference}.";
      apiUrl = opt types.str "[github] api_url: for GitHub Enterprise Server.";
      host = opt types.str "[github] host: for GitHub Enterprise Server.";
      gitUrl = opt types.str "[github] git_url: where git reaches repositories (default https://HOST).";
      installationId = opt types.ints.positive "[github] installation_id: skip the installation lookup.";
      permissions = opt (types.attrsOf (types.enum [ "read" "write" "admin" ])) "[github] permissions, such as { contents = \"write\"; }.";
    };
    broker = {
      idleExit = opt types.number "[broker] idle_exit: seconds without a request before the broker exits.";
    };
    cleanup = {
      idleStop = opt types.str "[cleanup] idle_stop, such as \"12h\".";
      idleDestroy = opt types.str "[cleanup] idle_destroy, such as \"14d\".";
      keepTimer = opt types.bool "[cleanup] keep_timer: keep devbox-cleanup.timer when the last drone goes.";
      keepVolume = opt types.bool "[cleanup] keep_volume: the clean-up keeps destroyed drones' home volumes.";
    };
    tailscale = {
      enable = opt types.bool "[tailscale] enabled: every drone joins the tailnet (on when any tailscale option is set).";
      authKey = opt types.str "[tailscale] auth_key: the Tailscale or Headscale auth key as ${reference} (default op://DevBox/{user}-tailscale-authkey/password).";
      loginServer = opt types.str "[tailscale] login_server: a Headscale URL (default: Tailscale's).";
      ssh = opt types.bool "[tailscale] ssh: Tailscale SSH in drones as well (tailscale up --ssh).";
      tailnet = opt types.str "[tailscale] tailnet: the MagicDNS suffix (tail1234.ts.net) for full names.";
    };
    ssh = {
      authorizedKeys = opt (types.listOf types.str) "[ssh] authorized_keys: public key lines every drone accepts.";
      defaultKeys = opt types.bool "[ssh] default_keys: read ~/.ssh/*.pub when no --ssh-key is given.";
    };
    extraSettings = mkOption {
      type = types.attrs;
      default = { };
      description = "More keys for config.toml, merged over the ones above (no secrets: the file is in the Nix store).";
    };
  };

  # The options' values -> config.toml's tables (attribute set ready for pkgs.formats.toml).
  toConfig = s:
    recursiveMerge
      (clean {
        max_drones = s.maxDrones;
        flavor = s.flavor;
        drone = clean { inherit (s.drone) image cpus memory syncthing env keys egress; "with" = s.drone."with"; };
        inherit (s) keys;
        github = clean {
          app_id = s.github.appId;
          private_key = s.github.privateKey;
          api_url = s.github.apiUrl;
          inherit (s.github) host permissions;
          git_url = s.github.gitUrl;
          installation_id = s.github.installationId;
        };
        broker = clean { idle_exit = s.broker.idleExit; };
        cleanup = clean {
          idle_stop = s.cleanup.idleStop;
          idle_destroy = s.cleanup.idleDestroy;
          keep_timer = s.cleanup.keepTimer;
          keep_volume = s.cleanup.keepVolume;
        };
        tailscale = clean {
          enabled = s.tailscale.enable;
          auth_key = s.tailscale.authKey;
          login_server = s.tailscale.loginServer;
          inherit (s.tailscale) ssh tailnet;
        };
        ssh = clean { authorized_keys = s.ssh.authorizedKeys; default_keys = s.ssh.defaultKeys; };
      })
      s.extraSettings;

  # NixOS/home-manager assertions: [ { assertion; message; } ].
  checks = prefix: s:
    let
      all = strings (toConfig s);
      refOk = v: v == null || isReference v;
    in
    [
      {
        assertion = refOk s.github.privateKey;
        message = "${prefix}.github.privateKey must be ${reference}: the Nix store is world-readable.";
      }
      {
        assertion = refOk s.tailscale.authKey;
        message = "${prefix}.tailscale.authKey must be ${reference}: the Nix store is world-readable.";
      }
      {
        assertion = s.keys == null || builtins.all (key: refOk (key.secret or null)) (builtins.attrValues s.keys);
        message = "${prefix}.keys.NAME.secret must be ${reference}: the Nix store is world-readable.";
      }
      {
        assertion = (s.github.appId == null) == (s.github.privateKey == null);
        message = "${prefix}.github: set both appId and privateKey, or neither.";
      }
      {
        assertion = !(builtins.any (has "-----BEGIN") all);
        message = "${prefix}: a PEM key is written out in the settings; give a reference (file:, op://, env:) instead.";
      }
      {
        assertion = !(builtins.any (has "tskey-") all);
        message = "${prefix}: a Tailscale key (tskey-...) is written out in the settings; give a reference (file:, op://, env:) instead.";
      }
    ];
}

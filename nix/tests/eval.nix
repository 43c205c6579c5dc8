# Evaluates devbox's Nix files without nixpkgs, against stub-lib.nix and stub packages, and
# returns plain data for tests/unit/test_nix.py:
#   nix-instantiate --eval --strict --json nix/tests/eval.nix --argstr settingsJSON '{...}'
# settingsJSON: values for the modules' `settings` (option names as in settings.nix).
{ settingsJSON ? "{}", users ? [ "alice" "bob" ] }:
let
  lib = import ./stub-lib.nix;
  given = builtins.fromJSON settingsJSON;

  isOption = v: builtins.isAttrs v && (v._type or null) == "option";
  # [ "a.b.c" ... ] for every option in a tree of options.
  optionPaths = prefix: tree:
    builtins.concatLists (map
      (n:
        let v = tree.${n}; p = if prefix == "" then n else "${prefix}.${n}"; in
        if isOption v then
          [ p ] ++ (if (v.type.name or "") == "submodule" then optionPaths p v.type.options else [ ])
        else if builtins.isAttrs v then optionPaths p v
        else [ ])
      (builtins.attrNames tree));
  # The options' defaults, with `given` laid over them.
  withDefaults = tree: over:
    builtins.mapAttrs
      (n: v:
        if isOption v then (over.${n} or v.default)
        else withDefaults v (over.${n} or { }))
      tree;

  settingsLib = import ../settings.nix { inherit lib; };
  settings = withDefaults settingsLib.options given;

  stubPackage = name: { type = "derivation"; inherit name; outPath = "/nix/store/00000000000000000000000000000000-${name}"; };
  pkgs = {
    callPackage = _: _: stubPackage "devbox";
    formats.toml = _: { generate = name: value: { inherit name; toml = value; }; };
  };

  nixos = import ../nixos-module.nix {
    inherit lib pkgs;
    config.services.devbox = {
      enable = true;
      package = stubPackage "devbox";
      inherit users settings;
      linger = true;
      subordinateIds = true;
      podman = true;
      cleanupTimer = true;
    };
  };
  hm = import ../home-manager-module.nix {
    inherit lib pkgs;
    config.programs.devbox = { enable = true; package = stubPackage "devbox"; cleanupTimer = true; inherit settings; };
  };

  # The image with every package argument a stub and buildLayeredImage returning its arguments.
  imageFn = import ../drone-image.nix;
  imageArgs = builtins.mapAttrs (n: _: stubPackage n) (builtins.functionArgs imageFn) // {
    dockerTools = {
      buildLayeredImage = args: args;
      binSh = stubPackage "bin-sh";
      usrBinEnv = stubPackage "usr-bin-env";
      caCertificates = stubPackage "ca-certificates";
    };
    buildEnv = args: stubPackage args.name // { inherit (args) paths; };
  };
  imageArgsUsed = builtins.removeAttrs imageArgs [ "name" "tag" "maxLayers" ];
  image = imageFn imageArgsUsed;

  # The flake's outputs with a stub nixpkgs: names only, nothing is built.
  flake = import ../../flake.nix;
  stubNixpkgs = {
    lib.genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    legacyPackages = { x86_64-linux = pkgs; aarch64-linux = pkgs; };
  };
  outputs = flake.outputs { self = outputs; nixpkgs = stubNixpkgs; };
  names = builtins.attrNames;
in
{
  settingsOptions = optionPaths "" settingsLib.options;
  nixosOptions = optionPaths "" (nixos.options);
  hmOptions = optionPaths "" (hm.options);
  rendered = settingsLib.toConfig settings;
  checks = map (c: { inherit (c) assertion message; }) (settingsLib.checks "settings" settings);
  nixos = {
    inherit (nixos.config) assertions environment virtualisation;
    users = nixos.config.users.users;
    userExtraConfig = nixos.config.systemd.user.extraConfig;
    cleanupService = nixos.config.systemd.user.services.devbox-cleanup;
    cleanupTimer = nixos.config.systemd.user.timers.devbox-cleanup;
  };
  hm = {
    inherit (hm.config) assertions home;
    config = hm.config.xdg.configFile."devbox/config.toml".source;
  };
  image = {
    inherit (image) contract name tag maxLayers config fakeRootCommands;
    contents = map (p: p.name) image.contents;
    tools = map (p: p.name) (builtins.head image.contents).paths;
  };
  flake = {
    description = flake.description;
    inputs = names flake.inputs;
    outputs = names outputs;
    packages = builtins.mapAttrs (_: names) outputs.packages;
    devShells = builtins.mapAttrs (_: names) outputs.devShells;
    nixosModules = names outputs.nixosModules;
    homeManagerModules = names outputs.homeManagerModules;
    overlays = names outputs.overlays;
  };
}

# nixosModules.devbox: devbox for chosen users on NixOS.
#
#   services.devbox = {
#     enable = true;
#     users = [ "alice" ];
#     settings.github = { appId = "123456"; privateKey = "file:/run/secrets/devbox-github-app.pem"; };
#   };
#
# Installs devbox for those users, enables lingering and subordinate ids for them, rootless
# Podman (with its Quadlet generator and the per-user API socket), writes /etc/devbox/config.toml
# (references only, never secrets) and points devbox at it, and declares the daily clean-up
# timer in the user managers of those users.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.devbox;
  settingsLib = import ./settings.nix { inherit lib; };
  inherit (lib) mkOption types mkIf;
  configPath = "/etc/devbox/config.toml";
  # /etc/systemd/user units run in every user manager; these conditions keep them to cfg.users.
  onlyUsers = { ConditionUser = map (u: "|" + u) cfg.users; };
  perUser = f: builtins.listToAttrs (map (u: { name = u; value = f u; }) cfg.users);
in
{
  options.services.devbox = {
    enable = lib.mkEnableOption "devbox, remote development containers on rootless Podman";
    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = "devbox built from this flake";
      description = "The devbox package.";
    };
    users = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Users who run drones: devbox in their packages, lingering, subordinate ids, the clean-up timer.";
    };
    linger = mkOption {
      type = types.bool;
      default = true;
      description = "Keep the users' systemd managers (and so their drones) running without a login.";
    };
    subordinateIds = mkOption {
      type = types.bool;
      default = true;
      description = "Give the users subordinate uid and gid ranges (autoSubUidGidRange), which rootless Podman needs.";
    };
    podman = mkOption {
      type = types.bool;
      default = true;
      description = "Enable Podman (virtualisation.podman): rootless containers, Quadlet, the user API socket.";
    };
    cleanupTimer = mkOption {
      type = types.bool;
      default = true;
      description = "Declare devbox-cleanup.timer (daily `devbox cleanup --apply`) for the users. devbox also installs its own copy in ~/.config/systemd/user with the first drone; that copy takes precedence while it exists.";
    };
    settings = mkOption {
      type = types.submodule { options = settingsLib.options; };
      default = { };
      description = "The contents of ${configPath} (devbox's config.toml). Secrets only as references.";
    };
  };

  config = mkIf cfg.enable {
    assertions = settingsLib.checks "services.devbox.settings" cfg.settings ++ [
      { assertion = cfg.users != [ ]; message = "services.devbox.users: name at least one user who runs drones."; }
    ];

    users.users = perUser (_: {
      packages = [ cfg.package ];
      linger = cfg.linger;
      autoSubUidGidRange = cfg.subordinateIds;
    });

    virtualisation.podman.enable = mkIf cfg.podman true;

    environment.etc."devbox/config.toml".source =
      (pkgs.formats.toml { }).generate "devbox-config.toml" (settingsLib.toConfig cfg.settings);
    environment.sessionVariables.DEVBOX_CONFIG = configPath;
    # Units devbox writes (broker, clean-up) run in the user manager, not a login shell.
    systemd.user.extraConfig = "DefaultEnvironment=DEVBOX_CONFIG=${configPath}";

    # The same as templates/units/devbox-cleanup.{service,timer}.j2.
    systemd.user.services.devbox-cleanup = mkIf cfg.cleanupTimer {
      description = "devbox idle clean-up: stop idle drones, destroy long-idle ones whose work is safe";
      unitConfig = onlyUsers;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${cfg.package}/bin/devbox cleanup --apply";
      };
    };
    systemd.user.timers.devbox-cleanup = mkIf cfg.cleanupTimer {
      description = "devbox daily idle clean-up of drones";
      wantedBy = [ "timers.target" ];
      unitConfig = onlyUsers;
      timerConfig = {
        OnCalendar = "daily";
        Persistent = true;
        RandomizedDelaySec = "1h";
      };
    };
  };
}

# homeManagerModules.devbox: devbox for one user with home-manager.
#
#   programs.devbox = {
#     enable = true;
#     settings.github = { appId = "123456"; privateKey = "op://Private/devbox-github-app/private key"; };
#   };
#
# Installs devbox, writes ~/.config/devbox/config.toml (references only, never secrets) and
# installs the clean-up timer. Lingering, subordinate ids and Podman itself are the system's
# business (nixosModules.devbox, or the distribution): home-manager cannot set them.
{ config, lib, pkgs, ... }:
let
  cfg = config.programs.devbox;
  settingsLib = import ./settings.nix { inherit lib; };
  inherit (lib) mkOption types mkIf;
  # With the timer on, keep it when the last drone goes unless the user says otherwise.
  settings = cfg.settings // {
    cleanup = cfg.settings.cleanup // {
      keepTimer = if cfg.settings.cleanup.keepTimer == null && cfg.cleanupTimer then true else cfg.settings.cleanup.keepTimer;
    };
  };
in
{
  options.programs.devbox = {
    enable = lib.mkEnableOption "devbox, remote development containers on rootless Podman";
    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = "devbox built from this flake";
      description = "The devbox package.";
    };
    cleanupTimer = mkOption {
      type = types.bool;
      default = true;
      description = "Install devbox-cleanup.timer on activation (`devbox cleanup --install`) and keep it without drones. devbox writes the unit itself: a home-manager unit of that name would be a file devbox refuses to replace.";
    };
    settings = mkOption {
      type = types.submodule { options = settingsLib.options; };
      default = { };
      description = "The contents of ~/.config/devbox/config.toml. Secrets only as references.";
    };
  };

  config = mkIf cfg.enable {
    assertions = settingsLib.checks "programs.devbox.settings" cfg.settings;
    home.packages = [ cfg.package ];
    xdg.configFile."devbox/config.toml".source =
      (pkgs.formats.toml { }).generate "devbox-config.toml" (settingsLib.toConfig settings);
    home.activation.devboxCleanupTimer = mkIf cfg.cleanupTimer (lib.hm.dag.entryAfter [ "reloadSystemd" ] ''
      run ${cfg.package}/bin/devbox cleanup --install \
        || echo "devbox: could not install devbox-cleanup.timer now; the first drone installs it" >&2
    '');
  };
}

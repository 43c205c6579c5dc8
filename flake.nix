{
  description = "devbox: remote development containers (drones) on rootless Podman, owned by systemd through Quadlet";

  # No flake.lock is committed yet: the first `nix build` or `nix flake lock` writes one.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        devbox = pkgs.callPackage ./nix/package.nix { };
        drone-image = pkgs.callPackage ./nix/drone-image.nix { };
        default = devbox;
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/devshell.nix { };
      });

      overlays.default = final: _prev: {
        devbox = final.callPackage ./nix/package.nix { };
        devbox-drone-image = final.callPackage ./nix/drone-image.nix { };
      };

      nixosModules = {
        devbox = { pkgs, lib, ... }: {
          imports = [ ./nix/nixos-module.nix ];
          services.devbox.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.devbox;
        };
        default = self.nixosModules.devbox;
      };

      homeManagerModules = {
        devbox = { pkgs, lib, ... }: {
          imports = [ ./nix/home-manager-module.nix ];
          programs.devbox.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.devbox;
        };
        default = self.homeManagerModules.devbox;
      };
    };
}

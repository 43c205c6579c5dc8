# devShells.<system>.default: what working on devbox needs (make test, ruff, the Nix checks).
{ mkShell, python3, ruff, podman, nix, gnumake, git, curl }:
mkShell {
  packages = [
    (python3.withPackages (ps: with ps; [ typer jinja2 podman pyjwt cryptography pyyaml types-pyyaml pytest hatchling ]
      ++ ps.pyjwt.optional-dependencies.crypto
      ++ (if ps ? onepassword-sdk then [ ps.onepassword-sdk ] else [ ])))
    ruff
    podman
    nix # nix-instantiate, for tests/unit/test_nix.py
    gnumake
    git
    curl
  ];
  shellHook = ''
    echo "devbox dev shell: make test, ruff check ., python -m devbox --help"
    export PYTHONPATH=$PWD''${PYTHONPATH:+:$PYTHONPATH}
  '';
}

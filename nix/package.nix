# packages.<system>.devbox: the Python application from pyproject.toml, its dependencies from
# nixpkgs, the templates inside the wheel (pyproject's force-include puts templates/ in it).
#
# Built with buildPythonPackage (buildPythonApplication's output cannot go into withPackages),
# and bin/devbox runs `python -m devbox` with an interpreter whose environment holds devbox. That
# matters: devbox writes its own argv (sys.executable -m devbox) into the broker and clean-up
# units, and the bare interpreter behind an ordinary console-script wrapper could not import
# devbox there.
{ lib, python3, makeWrapper, runCommand, podman, withPystemd ? true }:
let
  py = python3.pkgs;
  version = builtins.head (builtins.match ''.*__version__ = "([^"]+)".*'' (builtins.readFile ../devbox/__init__.py));
  # The one pyproject dependency that an older nixpkgs may not have: devbox imports it only for op://.
  onepassword = lib.optional (py ? onepassword-sdk) py.onepassword-sdk;

  app = py.buildPythonPackage {
    pname = "devbox";
    inherit version;
    pyproject = true;
    src = lib.fileset.toSource {
      root = ../.;
      fileset = lib.fileset.unions [ ../pyproject.toml ../README.md ../devbox ../templates ];
    };
    build-system = [ py.hatchling ];
    dependencies = [
      py.typer
      py.jinja2
      py.podman
      py.pyjwt
      py.cryptography
      py.pyyaml
    ] ++ py.pyjwt.optional-dependencies.crypto
    ++ onepassword
    ++ lib.optional withPystemd py.pystemd;
    pythonRemoveDeps = lib.optional (onepassword == [ ]) "onepassword-sdk";
    # pyproject keeps typer below 0.29 for speed only (see there); nixpkgs' typer works, if slower.
    pythonRelaxDeps = [ "typer" ];
    pythonImportsCheck = [ "devbox" "devbox.cli.app" ];
    doCheck = false; # the unit tests need the Quadlet generator and a writable HOME: `make test` runs them
    meta = {
      description = "Remote development containers (drones) on rootless Podman, owned by systemd through Quadlet";
      license = lib.licenses.mit;
      mainProgram = "devbox";
      platforms = lib.platforms.linux;
    };
  };
  env = python3.withPackages (_: [ app ]);
in
runCommand "devbox-${version}"
  {
    nativeBuildInputs = [ makeWrapper ];
    passthru = { inherit app env; };
    inherit (app) meta;
  } ''
  makeWrapper ${env}/bin/python3 $out/bin/devbox \
    --add-flags "-m devbox" \
    --suffix PATH : ${lib.makeBinPath [ podman ]}
''

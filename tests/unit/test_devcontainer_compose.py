"""A compose-based devcontainer.json (devbox/devcontainer/compose.py): reading and merging the compose
files, every refusal in one line naming the compose file and line, the main service as the drone's
build and settings, and the derived compose file of the other services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devbox.devcontainer import compose
from devbox.devcontainer.read import Variables, parse_jsonc, substitute
from devbox.devcontainer.validate import check
from devbox.errors import DevboxError, ExitCode

DEVCONTAINER = '{\n  "dockerComposeFile": %s,\n  "service": "app",\n  "remoteUser": "vscode"%s\n}\n'
MAIN = """services:
  app:
    build:
      context: .
      dockerfile: Dockerfile
      args:
        NODE: 20
    command: sleep infinity
    environment:
      DATABASE_URL: postgres://db:5432/app
      EMPTY:
    volumes:
      - ..:/workspaces/app:cached
      - node-modules:/workspaces/app/node_modules
    ports: ["3000:3000"]
    cap_add: [SYS_PTRACE]
  db:
    image: docker.io/library/postgres:16
    environment:
      - POSTGRES_PASSWORD=${DB_PASSWORD:-postgres}
      - PRICE=$$5
    volumes:
      - db-data:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD", "pg_isready"]
      interval: 5s
      retries: 5
    ports: ["5432:5432"]
  redis:
    image: docker.io/library/redis:7
    depends_on: [db]

volumes:
  db-data:
  node-modules:
"""


def workspace(tmp_path: Path, files: dict[str, str], dc_files: object = '"compose.yaml"', extra: str = "") -> Path:
    ws = tmp_path / "ws"
    (ws / ".devcontainer").mkdir(parents=True)
    (ws / ".devcontainer" / "devcontainer.json").write_text(DEVCONTAINER % (dc_files, extra))
    (ws / ".devcontainer" / "Dockerfile").write_text("FROM localhost/devbox-base:trixie\n")
    for name, text in files.items():
        (ws / ".devcontainer" / name).write_text(text)
    return ws


def document(ws: Path):
    file = ws / ".devcontainer" / "devcontainer.json"
    return substitute(parse_jsonc(file.read_text(), file), Variables(str(ws), str(ws), "id", local_env=lambda _: None))


def read(ws: Path, bind: bool = True) -> compose.Compose:
    return compose.read(document(ws), ws, ws if bind else None)


def refusal(ws: Path, bind: bool = True) -> str:
    with pytest.raises(DevboxError) as caught:
        read(ws, bind)
    assert caught.value.code == ExitCode.INVALID_INPUT
    assert "\n" not in caught.value.message
    return caught.value.message


def test_the_main_service_becomes_the_drone_s_build_and_settings(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {"compose.yaml": MAIN})
    found = read(ws)
    main = found.main
    assert main.build == {
        "build": {
            "dockerfile": str(ws / ".devcontainer" / "Dockerfile"),
            "context": str(ws / ".devcontainer"),
            "args": {"NODE": "20"},
        }
    }
    assert main.env == (("DATABASE_URL", "postgres://db:5432/app"),)  # EMPTY takes nothing from this host
    assert [(m.kind, m.source, m.target) for m in main.mounts] == [
        ("bind", str(ws), "/workspaces/app"),
        ("volume", "node-modules", "/workspaces/app/node_modules"),
    ]
    assert main.ports == (3000,) and main.cap_add == ("SYS_PTRACE",)
    assert any("command of the main service is not used" in note for note in found.notes)
    config = compose.with_main_service(check(document(ws), ws, compose=True), main)
    assert dict(config.container_env) == {"DATABASE_URL": "postgres://db:5432/app"}
    assert config.ports == (3000,)


def test_the_other_services_go_to_a_derived_compose_file_with_checked_keys_only(tmp_path: Path) -> None:
    found = read(workspace(tmp_path, {"compose.yaml": MAIN}))
    assert found.hosts == ("db", "redis")
    assert found.inner is not None
    derived = json.loads(found.inner.split("\n", 1)[1])
    assert derived == {
        "name": "devbox",
        "services": {
            "db": {
                "image": "docker.io/library/postgres:16",
                "environment": {"POSTGRES_PASSWORD": "postgres", "PRICE": "$$5"},  # compose reads `$` again
                "healthcheck": {"test": ["CMD", "pg_isready"], "interval": "5s", "retries": 5},
                "volumes": ["db-data:/var/lib/postgresql/data"],
                "network_mode": "host",
            },
            "redis": {
                "image": "docker.io/library/redis:7",
                "depends_on": {"db": {"condition": "service_started"}},
                "network_mode": "host",
            },
        },
        "volumes": {"db-data": {}},
    }
    assert any("ports of service db is not used" in note for note in found.notes)


def test_run_services_chooses_and_depends_on_a_service_left_out_is_dropped(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {"compose.yaml": MAIN}, extra=',\n  "runServices": ["redis"]')
    found = read(ws)
    assert found.hosts == ("redis",)
    assert "depends_on" not in json.loads(found.inner.split("\n", 1)[1])["services"]["redis"]


def test_no_other_service_no_derived_file(tmp_path: Path) -> None:
    found = read(workspace(tmp_path, {"compose.yaml": MAIN}, extra=',\n  "runServices": []'))
    assert found.inner is None and found.hosts == ()


def test_files_are_merged_in_order_and_anchors_are_read(tmp_path: Path) -> None:
    base = "x-img: &img\n  image: docker.io/library/redis:7\nservices:\n  app:\n    image: localhost/app:1\n"
    base += "    environment: {A: one, B: two}\n  cache:\n    <<: *img\n    command: [redis-server]\n"
    over = "services:\n  app:\n    environment: {B: three}\n  cache:\n    command: [redis-server, --save, '']\n"
    ws = workspace(tmp_path, {"compose.yaml": base, "over.yaml": over}, dc_files='["compose.yaml", "over.yaml"]')
    found = read(ws)
    assert found.main.build == {"image": "localhost/app:1"}
    assert found.main.env == (("A", "one"), ("B", "three"))
    cache = json.loads(found.inner.split("\n", 1)[1])["services"]["cache"]
    assert cache["image"] == "docker.io/library/redis:7" and cache["command"] == ["redis-server", "--save", ""]


def test_scratch_config_takes_the_build_features_and_users(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {"compose.yaml": MAIN}, extra=',\n  "features": {"ghcr.io/x/y:1": {}}')
    doc = document(ws)
    scratch = json.loads(compose.scratch_config(doc, read(ws).main))
    assert set(scratch) == {"build", "features", "remoteUser"}
    source = compose.scratch_source(ws, doc.file, read(ws).main, json.dumps(scratch), tmp_path / "scratch")
    assert source.config_file.parent.parent == tmp_path / "scratch"
    assert source.context_dir == ws / ".devcontainer"


def test_local_features_are_refused_with_their_line(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {"compose.yaml": MAIN}, extra=',\n  "features": {"./local": {}}')
    with pytest.raises(DevboxError) as caught:
        compose.scratch_config(document(ws), read(ws).main)
    assert caught.value.message.startswith(f"{ws}/.devcontainer/devcontainer.json:5: local features")


APP = "services:\n  app:\n    image: localhost/app:1\n"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (APP + "    privileged: true\n", 4, "privileged containers are refused"),
        (APP + "    cap_add: [SYS_ADMIN]\n", 4, "capability SYS_ADMIN is refused"),
        (APP + "    security_opt: [label=disable]\n", 4, "securityOpt 'label=disable' is refused"),
        (APP + "    devices: [/dev/kvm]\n", 4, "devices are refused"),
        (APP + "    network_mode: host\n", 4, "network_mode 'host' is refused"),
        (APP + "    pid: host\n", 4, "another process namespace is refused"),
        (APP + "    ipc: host\n", 4, "another IPC namespace is refused"),
        (APP + "    userns_mode: host\n", 4, "another user namespace is refused"),
        (APP + "    volumes_from: [db]\n", 4, "volumes_from is refused"),
        (APP + "    env_file: .env\n", 4, "env_file is not supported"),
        (APP + "    volumes:\n      - /etc:/host-etc\n", 5, "outside the workspace"),
        (APP + "    volumes:\n      - ~/.ssh:/keys\n", 5, "outside the workspace"),
        (APP + "    volumes:\n      - ./x:/etc/devbox\n", 5, "covers devbox's own files"),
        (APP + "    volumes:\n      - type: npipe\n        target: /x\n        source: y\n", 5, "only bind"),
        (APP + "    environment: {'1BAD': x}\n", 4, "invalid environment variable name"),
        (APP + '    environment: {A: "x\\ny"}\n', 4, "A"),
        ("services:\n  app:\n    build:\n      context: ../..\n", 4, "outside the workspace"),
        ("services:\n  app:\n    build:\n      context: .\n      ssh: [default]\n", 5, "build.ssh is refused"),
        ("services:\n  app:\n    build:\n      context: .\n      dockerfile: ../../../x\n", 5, "outside"),
        ("services:\n  app:\n    build: .\n    image: x\n  db:\n    build: .\n", 6, "give it an image"),
        (APP + "  db:\n    image: localhost/db:1\n    volumes: [./data:/data]\n", 6, "only named volumes"),
        (APP + "  db:\n    image: localhost/db:1\n    volumes: [data:/data]\n", 6, "not declared"),
        (APP + "  db:\n    image: localhost/db:1\n    network_mode: service:app\n", 6, "network_mode"),
        (APP + "  db:\n    image: localhost/db:1\n    privileged: true\n", 6, "privileged"),
        (APP + "  db:\n    image: 'bad image!'\n", 5, "invalid image reference"),
        (APP + "  db:\n    command: x\n", 4, "has no image"),
        (APP + "  db:\n    image: localhost/db:1\n    healthcheck: {interval: soon}\n", 6, "not a duration"),
        (APP + "  db:\n    image: localhost/db:1\n    restart: sometimes\n", 6, "not known"),
        (APP + "  db:\n    image: localhost/db:1\n    stop_grace_period: later\n", 6, "not a duration"),
        (APP + "  db:\n    image: localhost/db:1\n    environment:\n      - X=${Y:?needed}\n", 7, "must be set"),
        (APP + "  'bad name':\n    image: localhost/db:1\n", 4, "service name"),
        (APP + "secrets:\n  s:\n    file: /etc/shadow\n", 4, "secrets are not supported"),
        (APP + "include: [other.yaml]\n", 4, "include is not supported"),
        ("services:\n  app:\n    image: !!python/object:os.system x\n", 3, "not valid YAML"),
        ("services:\n  app: [\n", 3, "not valid YAML"),
    ],
)
def test_every_refusal_is_one_line_with_the_compose_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    ws = workspace(tmp_path, {"compose.yaml": text})
    message = refusal(ws)
    assert message.startswith(f"{ws}/.devcontainer/compose.yaml:{line}: "), message
    assert words in message, message


@pytest.mark.parametrize(
    ("extra", "dc_files", "line", "words"),
    [
        ("", '"../../outside.yaml"', 2, "outside the workspace"),
        ("", '"missing.yaml"', 2, "is not there"),
        ("", "5", 2, "dockerComposeFile must be"),
        (',\n  "runServices": ["nope"]', '"compose.yaml"', 5, "runServices names 'nope'"),
    ],
)
def test_refusals_of_the_devcontainer_json_name_its_line(
    tmp_path: Path, extra: str, dc_files: str, line: int, words: str
) -> None:
    (tmp_path / "outside.yaml").write_text(APP)
    ws = workspace(tmp_path, {"compose.yaml": APP}, dc_files=dc_files, extra=extra)
    message = refusal(ws)
    assert message.startswith(f"{ws}/.devcontainer/devcontainer.json:{line}: "), message
    assert words in message, message


def test_a_service_not_in_the_files_is_refused(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {"compose.yaml": "services:\n  web:\n    image: localhost/web:1\n"})
    assert "service 'app' is not in the compose files (web)" in refusal(ws)


def test_a_repo_drone_has_no_host_directory_to_bind(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {"compose.yaml": APP + "    volumes: ['..:/workspaces/app']\n"})
    assert "a bind mount needs a host workspace" in refusal(ws, bind=False)


def test_aliases_cannot_blow_a_small_file_up(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefghij":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
    ws = workspace(tmp_path, {"compose.yaml": APP + bomb})
    assert "too large or too deep" in refusal(ws)


def test_nesting_too_deep_for_the_parser_is_refused(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {"compose.yaml": APP + "x-deep: " + "[" * 20000 + "]" * 20000 + "\n"})
    assert "nested too deeply" in refusal(ws)


def test_host_environment_is_read_only_for_harmless_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "secret-token")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    text = APP + "    environment:\n      TOKEN: ${GITHUB_TOKEN}\n      ZONE: $TZ\n"
    found = read(workspace(tmp_path, {"compose.yaml": text}))
    assert found.main.env == (("TOKEN", ""), ("ZONE", "Europe/Berlin"))
    assert any("GITHUB_TOKEN} is not read from this host" in note for note in found.notes)
    assert "secret-token" not in repr(found)


# --- create, through the command layer (the builder faked: tests/unit/test_devcontainer_create.py) ---


def test_create_builds_the_main_service_with_containers_and_writes_the_inner_services(world, capsys) -> None:
    from tests.unit.test_cli import devbox
    from tests.unit.test_devcontainer_create import TAG, FakeBuilder
    from tests.unit.test_devcontainer_create import workspace as dc_workspace

    world.builder = builder = FakeBuilder(metadata=())
    world.podman.images.add(TAG)
    root = dc_workspace(
        world,
        {
            ".devcontainer/devcontainer.json": DEVCONTAINER % ('"compose.yaml"', ""),
            ".devcontainer/compose.yaml": MAIN,
            ".devcontainer/Dockerfile": "FROM localhost/devbox-base:trixie\n",
        },
    )
    code, out, err = devbox(capsys, "create", "--path", str(root))
    assert code == 0, err
    assert "--with containers" in out
    [source] = builder.built
    assert builder.build_args == [("DEVBOX_CONTAINERS=1",)] and source.context_dir == root / ".devcontainer"
    assert source.config_file.parent.parent == world.paths.compose_dir
    assert json.loads(source.config_file.read_text())["build"]["dockerfile"] == str(root / ".devcontainer/Dockerfile")
    unit = (world.paths.quadlet_dir / "drone-app.container").read_text()
    for line in (
        "Environment=DEVBOX_WITH=containers",
        "Environment=DATABASE_URL=postgres://db:5432/app",
        "AddDevice=/dev/net/tun",
        f"Volume={world.paths.drones_dir}/app/compose.yaml:/etc/devbox/compose.yaml:ro",
        "AddHost=db:127.0.0.1",
        "AddHost=redis:127.0.0.1",
        f"Volume={root}:/workspaces/app",
        "PublishPort=127.0.0.1:3000:3000",
    ):
        assert line + "\n" in unit, line
    derived = (world.paths.drones_dir / "app/compose.yaml").read_text()
    assert set(json.loads(derived.split("\n", 1)[1])["services"]) == {"db", "redis"}

    from devbox.host.podman import ContainerInfo

    world.podman.containers["app"] = ContainerInfo(
        name="drone-app", drone="app", state="running", image=TAG, started_at=None, ports=()
    )
    world.systemd.active.add("drone-app.service")
    world.probe.compose["drone-app"] = "up: db redis"
    code, out, err = devbox(capsys, "status", "app", "--json")
    assert code == 0, err
    assert json.loads(out)["compose_outcome"] == "up: db redis"
    assert "compose       up: db redis" in devbox(capsys, "status", "app")[1]
    assert devbox(capsys, "destroy", "app", "--yes")[0] == 0
    assert not (world.paths.drones_dir / "app").exists()


def test_a_refused_compose_file_writes_nothing(world, capsys) -> None:
    from tests.unit.test_cli import devbox
    from tests.unit.test_devcontainer_create import FakeBuilder
    from tests.unit.test_devcontainer_create import workspace as dc_workspace

    world.builder = builder = FakeBuilder(metadata=())
    root = dc_workspace(
        world,
        {
            ".devcontainer/devcontainer.json": DEVCONTAINER % ('"compose.yaml"', ""),
            ".devcontainer/compose.yaml": APP + "    privileged: true\n",
        },
    )
    code, _, err = devbox(capsys, "create", "--path", str(root))
    assert code == ExitCode.INVALID_INPUT
    [line] = err.strip().splitlines()
    assert line.endswith(f"{root}/.devcontainer/compose.yaml:4: privileged containers are refused"), line
    assert builder.built == [] and not (world.paths.quadlet_dir / "drone-app.container").exists()


def test_a_dry_run_shows_the_units_and_builds_nothing(world, capsys) -> None:
    from tests.unit.test_cli import devbox
    from tests.unit.test_devcontainer_create import FakeBuilder
    from tests.unit.test_devcontainer_create import workspace as dc_workspace

    world.builder = builder = FakeBuilder(metadata=())
    root = dc_workspace(
        world,
        {
            ".devcontainer/devcontainer.json": DEVCONTAINER % ('"compose.yaml"', ""),
            ".devcontainer/compose.yaml": MAIN,
            ".devcontainer/Dockerfile": "FROM localhost/devbox-base:trixie\n",
        },
    )
    code, out, err = devbox(capsys, "render", "--path", str(root))
    assert code == 0, err
    assert "AddHost=db:127.0.0.1" in out and "Environment=DEVBOX_WITH=containers" in out
    assert builder.built == [] and not (world.paths.quadlet_dir / "drone-app.container").exists()


def test_with_containers_a_plain_devcontainer_image_gets_podman_too(world, capsys) -> None:
    from tests.unit.test_cli import devbox
    from tests.unit.test_devcontainer_create import TAG, FakeBuilder
    from tests.unit.test_devcontainer_create import workspace as dc_workspace

    world.builder = builder = FakeBuilder(metadata=())
    world.podman.images.add(TAG)
    root = dc_workspace(world)
    code, _, err = devbox(capsys, "create", "--path", str(root), "--with", "containers")
    assert code == 0, err
    [source] = builder.built
    assert builder.build_args == [("DEVBOX_CONTAINERS=1",)]
    assert source.config_file == root / ".devcontainer/devcontainer.json"

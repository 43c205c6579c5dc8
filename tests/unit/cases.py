"""The drone specs the golden-file and Quadlet tests render."""

from __future__ import annotations

from dataclasses import replace

from devbox.context import HostFacts, KeyFacts
from devbox.drone.spec import DroneSpec
from tests.fakes import FIXED_NOW

HOSTILE_ENV = {
    "PERCENT": "100% %h %t %%",
    "DOLLAR": "$HOME ${PATH} $$ $",
    "SPACES": "  two  spaces  ",
    "QUOTES": "she said \"hi\" and 'bye'",
    "BACKSLASH": 'C:\\path\\to\\ \\" \\n',
    "INJECT_ARG": "x --privileged --volume /:/host",
    "INJECT_QUOTE": '" --privileged "',
    "INJECT_KEY": 'x" Label="io.devbox.repos=evil/repo',
    "SEMICOLON": "a; rm -rf / ; b",
    "EMPTY": "",
    "UNICODE": "grüße ✓",
}


# Real public keys (made for these tests with ssh-keygen; their private halves were thrown away).
ED25519_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFr9p1p5PSnARIWJJurwUKxlq03RFq75rH98Lukp5wC/ dev@laptop"
ECDSA_KEY = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBAXO2liGmuRexKC54M"
    "F7IW9AZPi6ViY+GaH9mXtusuTqI6XqEosDu7ozwgxld/vFbFkDufw03EkUTQyv0yc3iQg= dev@desktop"
)


def cases() -> dict[str, DroneSpec]:
    common = {"created": FIXED_NOW, "version": "0.1.0"}
    return {
        "minimal": DroneSpec.build(name="demo", repos=[], image="localhost/devbox-drone:latest", **common),
        "all-options": DroneSpec.build(
            name="acme-widgets",
            repos=["acme/widgets", "acme/widgets-docs"],
            image="ghcr.io/acme/dev-image:2026.11",
            cpus="1.5",
            memory="4G",
            ssh_port="2201",
            syncthing=True,
            services=["mosh"],
            mosh_ports="60005-60008",
            env={"EDITOR": "vim", "TZ": "Europe/Berlin"},
            permissions={"contents": "write", "pull_requests": "read"},
            **common,
        ),
        "tailnet": DroneSpec.build(
            name="tailnode",
            repos=["acme/tailnode"],
            image="localhost/devbox-drone:latest",
            tailscale=True,
            login_server="https://headscale.example.com:8443/",
            tailscale_ssh=True,
            ssh_keys=[ED25519_KEY, ECDSA_KEY],
            **common,
        ),
        "workspace": DroneSpec.build(
            name=None,
            repos=["acme/app"],
            image="localhost/devbox-drone:latest",
            path="/home/dev/code/app",
            dotfiles_url="https://git.example.com/dev/dotfiles.git",
            dotfiles_branch="main",
            **common,
        ),
        "fenced": DroneSpec.build(
            name="agent", repos=["acme/agent"], image="localhost/devbox-drone:latest", egress="fenced", **common
        ),
        "allow": DroneSpec.build(
            name="allowed",
            repos=["acme/agent"],
            image="localhost/devbox-drone:latest",
            egress="allow:api.anthropic.com:443,pypi.org,[2001:db8::1]:8443,203.0.113.7",
            **common,
        ),
        "containers": DroneSpec.build(
            name="inner", repos=[], image="localhost/devbox-drone:latest", services=["containers"], **common
        ),
        "web": DroneSpec.build(
            name="webby",
            repos=["acme/webby"],
            image="localhost/devbox-drone:latest",
            ssh_port="2203",
            services=["web-terminal", "code-server", "mosh"],
            mosh_ports="60001-60004",
            web_ports="web-terminal:7701,code-server:7702",
            **common,
        ),
        "hostile-env": DroneSpec.build(
            name="x", repos=["acme/demo"], image="localhost/devbox-drone:latest", env=HOSTILE_ENV, **common
        ),
        "api-keys": DroneSpec.build(
            name="agent",
            repos=["acme/agent"],
            image="localhost/devbox-drone:latest",
            keys=["openai", "anthropic"],
            **common,
        ),
        **devcontainer_cases(),
    }


HOST = HostFacts(
    devbox_command=("/opt/devbox venv/bin/python3", "-m", "devbox"),
    podman_command="/usr/bin/podman",
    tools_dir="/home/dev/.local/share/devbox/drone-tools",
    git_url="https://github.com",
    github_key_path="/home/dev/.config/devbox/github-app.pem",
    drones_dir="/home/dev/.local/share/devbox/drones",
    uid=1000,
    gid=1000,
    quadlet_version=(5, 4),
    keys=(
        KeyFacts(
            "anthropic",
            "/home/dev/.local/state/devbox/credentials/keys/anthropic.key",
            (("ANTHROPIC_BASE_URL", "http://127.0.0.3:9119/anthropic"), ("ANTHROPIC_API_KEY", "devbox-proxy")),
        ),
        KeyFacts("mistral", "/home/dev/keys/mistral key.txt", ()),  # configured, not the drone's: not rendered
        KeyFacts(
            "openai",
            "/home/dev/.local/state/devbox/credentials/keys/openai.key",
            (("OPENAI_BASE_URL", "http://127.0.0.3:9119/openai/v1"), ("OPENAI_API_KEY", "devbox-proxy")),
        ),
    ),
)
HOST_QUADLET_5_8 = replace(HOST, quadlet_version=(5, 8))


def golden_cases() -> dict[str, tuple[DroneSpec, HostFacts]]:
    """Every case rendered for Podman 5.4's Quadlet, and those whose units differ for 5.8's."""
    for_5_4 = {name: (spec, HOST) for name, spec in cases().items()}
    return for_5_4 | {"all-options-quadlet-5.8": (cases()["all-options"], HOST_QUADLET_5_8)}


# --- drones from a repository's devcontainer.json, through the same reading and mapping as create ---

DEVCONTAINER_JSON = """{
  // A typical configuration: a Dockerfile build, features, ports, a debugger's needs.
  "name": "app",
  "build": {"dockerfile": "Dockerfile", "context": "..", "args": {"NODE": "20"}},
  "features": {"ghcr.io/devcontainers/features/node:1": {"version": "20"}},
  "containerEnv": {"APP_ENV": "dev", "WORKSPACE": "${containerWorkspaceFolder}"},
  "remoteEnv": {"PATH": "${containerEnv:PATH}:/opt/tools"},
  "remoteUser": "vscode",
  "mounts": [
    "source=${devcontainerId}-cache,target=/home/vscode/.cache,type=volume",
    {"type": "bind", "source": "${localWorkspaceFolder}/data", "target": "/data", "readonly": true},
  ],
  "forwardPorts": [3000, 8080],
  "capAdd": ["SYS_PTRACE"],
  "securityOpt": ["seccomp=unconfined"],
  "hostRequirements": {"cpus": 4, "memory": "8gb"},
  "postCreateCommand": "npm ci",
  "postStartCommand": ["npm", "run", "watch"],
  "initializeCommand": "echo never run",
}
"""

DEVCONTAINER_HOSTILE_JSON = """{
  "image": "mcr.microsoft.com/devcontainers/base:bookworm",
  "containerEnv": %s,
  "remoteEnv": {"INJECT": "x\\" --privileged \\"", "PERCENT": "%%h %%t"},
  "mounts": ["source=a.b_c-d,target=/srv/a@b+c,type=volume"],
  "postCreateCommand": {"one": "echo \\"$HOME\\" %%h; rm -rf /", "two": ["sh", "-c", "echo ${containerEnv:HOME}"]},
}
"""

# ${PATH} would be an unknown variable in a devcontainer.json (refused: test_devcontainer.py).
DEVCONTAINER_HOSTILE_ENV = {**HOSTILE_ENV, "DOLLAR": "$HOME $PATH $$ $ ${ x"}
DEVCONTAINER_IMAGE = "localhost/devbox-devcontainer-app:0123456789ab"
DEVCONTAINER_METADATA = (
    {"id": "ghcr.io/devcontainers/features/node:1", "containerEnv": {"NVM_DIR": "/usr/local/share/nvm"}},
    {"remoteUser": "vscode", "postCreateCommand": "npm ci", "onCreateCommand": "nvm install"},
)


DEVCONTAINER_COMPOSE_JSON = """{
  "dockerComposeFile": "compose.yaml",
  "service": "app",
  "workspaceFolder": "/workspaces/app",
  "remoteUser": "vscode",
  "containerEnv": {"APP_ENV": "dev"},
}
"""
COMPOSE_YAML = """services:
  app:
    build: {context: ., dockerfile: Dockerfile}
    command: sleep infinity
    environment: {DATABASE_URL: "postgres://db:5432/app"}
    volumes: ["..:/workspaces/app:cached", "cache:/home/vscode/.cache"]
  db:
    image: docker.io/library/postgres:16
    environment: {POSTGRES_PASSWORD: "pa$$word"}
    volumes: ["db-data:/var/lib/postgresql/data"]
  redis-cache:
    image: docker.io/library/redis:7
volumes: {db-data: {}, cache: {}}
"""


def devcontainer_spec(
    name: str, text: str, *, path: str | None, repos: list[str], compose_text: str | None = None
) -> DroneSpec:
    from pathlib import Path

    from devbox.devcontainer import mapping
    from devbox.devcontainer.model import BuiltImage
    from devbox.devcontainer.read import Variables, parse_jsonc, substitute
    from devbox.devcontainer.validate import check

    workspace = path or "/home/dev/app"
    document = parse_jsonc(text, Path(workspace) / ".devcontainer/devcontainer.json")
    variables = Variables(workspace, path or "/home/dev/app", "d3v1d", local_env=lambda _: None)
    document = substitute(document, variables)
    config = check(document, Path(path) if path else None, compose=compose_text is not None)
    services = None
    if compose_text is not None:
        from devbox.devcontainer import compose

        notes: list[str] = []
        parsed = compose.parse_text(compose_text, Path(workspace) / ".devcontainer/compose.yaml", notes)
        services = compose.judge(document, parsed, Path(workspace), Path(path) if path else None, notes)
        config = compose.with_main_service(config, services.main)
    image = BuiltImage(
        DEVCONTAINER_IMAGE, DEVCONTAINER_METADATA, "0123456789abcdef", 1000, 1000, "vscode", "/home/vscode"
    )
    merged = mapping.merge([*mapping.metadata_configs(image), config])
    return DroneSpec.build(
        name=name,
        repos=repos,
        image=image.tag,
        created=FIXED_NOW,
        version="0.1.0",
        ssh_port=2201,
        cpus=merged.config.cpus,
        memory=merged.config.memory,
        env=dict(merged.config.container_env),
        path=path,
        devcontainer=".devcontainer/devcontainer.json",
        devcontainer_hash=image.config_hash,
        devcontainer_env=tuple(name for name, _ in merged.config.container_env),
        ports=tuple((port, port) for port in merged.config.ports),
        services=["containers"] if services else [],
        extras=replace(
            mapping.extras(name, merged, image, merged.config.workspace_folder if path else None, workspace),
            compose=services.inner if services else None,
            hosts=services.hosts if services else (),
        ),
    )


def devcontainer_cases() -> dict[str, DroneSpec]:
    import json

    hostile = DEVCONTAINER_HOSTILE_JSON % json.dumps(DEVCONTAINER_HOSTILE_ENV)
    return {
        "devcontainer": devcontainer_spec("app", DEVCONTAINER_JSON, path="/home/dev/code/app", repos=["acme/app"]),
        "devcontainer-hostile": devcontainer_spec("evil", hostile, path=None, repos=["evil/repo"]),
        "devcontainer-compose": devcontainer_spec(
            "app", DEVCONTAINER_COMPOSE_JSON, path="/home/dev/code/app", repos=[], compose_text=COMPOSE_YAML
        ),
    }

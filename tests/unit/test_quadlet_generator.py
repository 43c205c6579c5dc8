"""Every rendered .container through two real Quadlet generators (`quadlet -dryrun -user`),
Podman 5.4's and 5.8's (tests/conftest.py), each given the units devbox renders for its version.

Assertions are on the `podman run` argv that systemd will execute, split the way
systemd splits ExecStart= (unitfile.split_words), so a hostile value that added a
directive or an argument would show up here.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from devbox.drone.services import SERVICES
from devbox.drone.spec import DroneSpec
from devbox.units.render import HostFacts, render_drone
from devbox.units.unitfile import parse_sections, split_words, values
from tests.conftest import Generator
from tests.unit.cases import HOST, HOSTILE_ENV, cases


def dryrun(quadlet: Path, quadlet_dir: Path) -> subprocess.CompletedProcess[str]:
    """`quadlet -dryrun -user` over one directory, as systemd's generator would see it."""
    return subprocess.run(
        [quadlet, "-dryrun", "-user"],
        capture_output=True,
        text=True,
        env={**os.environ, "QUADLET_UNIT_DIRS": str(quadlet_dir)},
        check=False,
    )


def generate(
    generator: Generator,
    spec: DroneSpec,
    tmp_path: Path,
    host: HostFacts | None = None,
    *,
    without: tuple[str, ...] = (),
) -> tuple[dict[str, str], str]:
    """The services the generator makes of SPEC's units (but those named in WITHOUT), rendered for its
    version unless HOST says otherwise."""
    quadlet_dir = tmp_path / "containers" / "systemd"
    for rendered in render_drone(spec, host or replace(HOST, quadlet_version=generator.version)):
        if rendered.place.value == "quadlet" and rendered.relative_path not in without:
            path = quadlet_dir / rendered.relative_path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rendered.text)
    result = dryrun(generator.path, quadlet_dir)
    assert result.returncode == 0, result.stderr
    units: dict[str, str] = {}
    current = None
    for line in result.stdout.splitlines(keepends=True):
        if line.startswith("---") and line.rstrip().endswith("---"):
            current = line.strip("-\n")
            units[current] = ""
        elif current:
            units[current] += line
    return units, result.stderr


def podman_run_argv(service_text: str) -> list[str]:
    (exec_start,) = values(parse_sections(service_text), "Service", "ExecStart")
    return split_words(exec_start, keep_specifiers=True)  # Quadlet's own %N, %t, %h stay as written


def option_values(argv: list[str], option: str) -> list[str]:
    found = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == option]
    found += [a.split("=", 1)[1] for a in argv if a.startswith(option + "=")]
    return found


@pytest.mark.parametrize("case", sorted(cases()))
def test_generator_accepts_every_key(generator: Generator, tmp_path: Path, case: str) -> None:
    spec = cases()[case]
    units, stderr = generate(generator, spec, tmp_path)
    assert list(units) == [f"drone-{spec.name}.service"]
    assert "unsupported key" not in stderr and "converting" not in stderr, stderr
    service = units[f"drone-{spec.name}.service"]
    assert values(parse_sections(service), "Install", "WantedBy") == ["default.target"]
    assert values(parse_sections(service), "Service", "Restart") == ["on-failure"]
    assert "drone-" + spec.name + "-creds.socket" in values(parse_sections(service), "Unit", "Wants")
    post = values(parse_sections(service), "Service", "ExecStartPost")
    clone = f"-/usr/bin/podman exec --detach drone-{spec.name} /usr/local/lib/devbox/clone-repos"
    dotfiles = f"-/usr/bin/podman exec --detach drone-{spec.name} /usr/local/lib/devbox/dotfiles"
    forward = f"-/usr/bin/podman exec --detach drone-{spec.name} /usr/local/lib/devbox/key-forward"
    assert post == (
        ([clone] if spec.repos and not spec.path else [])
        + ([forward] if spec.keys else [])
        + ([dotfiles] if spec.dotfiles_url else [])
    )
    home = spec.extras.home if spec.extras and spec.extras.home else "%h"
    workdir = spec.extras.workdir if spec.extras and spec.extras.workdir else spec.path
    assert option_values(podman_run_argv(service), "--workdir") == [workdir or home]


@pytest.mark.parametrize("case", sorted(cases()))
def test_podman_run_arguments(generator: Generator, tmp_path: Path, case: str) -> None:
    spec = cases()[case]
    units, _ = generate(generator, spec, tmp_path)
    argv = podman_run_argv(units[f"drone-{spec.name}.service"])
    # A fenced drone's hook (devbox/fence/hook.py) comes from its own hooks directory, a global option.
    hooks = [f"--hooks-dir={HOST.drones_dir}/{spec.name}/hooks.d"] if spec.fenced else []
    assert argv[: 2 + len(hooks)] == ["/usr/bin/podman", *hooks, "run"]
    annotations = dict(item.split("=", 1) for item in option_values(argv, "--annotation"))
    assert annotations == ({"io.devbox.egress": spec.egress, "io.devbox.drone": spec.name} if spec.fenced else {})
    assert argv[-1] == spec.image, "the image must be the last argument: nothing after it"
    assert option_values(argv, "--name") == [f"drone-{spec.name}"]
    assert option_values(argv, "--hostname") == [spec.name]
    extras = spec.extras
    mapped = extras is not None and extras.uid is not None
    assert option_values(argv, "--userns") == [f"keep-id:uid={extras.uid},gid={extras.gid}" if mapped else "keep-id"]
    assert "--init" in argv
    # Podman fills these in (not systemd: the unit has $$); the e2e tests check the shell in the drone.
    assert option_values(argv, "--passwd-entry") == ["$USERNAME:*:$UID:$GID:$NAME:$HOME:/bin/bash"]
    tools = HOST.tools_dir
    workspace = [f"{spec.path}:{spec.path}"] if spec.path else []
    home = extras.home if extras and extras.home else "%h"  # a devcontainer image's remote user's home
    if home != "%h":
        assert f"HOME={home}" in option_values(argv, "--env")
    inner = [f"drone-{spec.name}-containers:/var/lib/devbox-containers"] if spec.containers else []
    says_why = [f"{tools}/no-containers:/usr/local/bin/{name}:ro" for name in ("podman", "docker")]
    assert option_values(argv, "-v") == [
        f"drone-{spec.name}-home:{home}",
        *inner,
        *workspace,
        f"%t/devbox/drones/{spec.name}:/run/devbox",
        f"{tools}:/usr/local/lib/devbox:ro",
        f"{tools}/gitconfig:/etc/gitconfig:ro",
        f"{tools}/gh:/usr/local/bin/gh:ro",
        *([] if spec.containers else says_why),
        f"{HOST.drones_dir}/{spec.name}/authorized_keys:/etc/devbox/authorized_keys:ro",
        *([f"{HOST.drones_dir}/{spec.name}/devcontainer.json:/etc/devbox/devcontainer.json:ro"] if extras else []),
        *(extras.volumes if extras else ()),
        *(
            [f"{HOST.drones_dir}/{spec.name}/compose.yaml:/etc/devbox/compose.yaml:ro"]
            if extras and extras.compose
            else []
        ),
    ]
    # A compose-based devcontainer.json's other services share the drone's network: each name is 127.0.0.1.
    assert option_values(argv, "--add-host") == [f"{host}:127.0.0.1" for host in (extras.hosts if extras else ())]
    assert option_values(argv, "--cap-add") == [cap.lower() for cap in (extras.cap_add if extras else ())]
    inner_opts = ["unmask=/proc/*"] if spec.containers else []
    assert option_values(argv, "--security-opt") == inner_opts + list(extras.security_opt if extras else ())
    assert option_values(argv, "--device") == (["/dev/net/tun"] if spec.containers else [])
    labels = dict(label.split("=", 1) for label in option_values(argv, "--label"))
    assert labels == spec.labels()
    env = dict(item.split("=", 1) for item in option_values(argv, "--env"))
    devbox_env = {"DEVBOX_DRONE": spec.name, "DEVBOX_SYNCTHING": "1" if spec.syncthing else "0"}
    if spec.services:
        devbox_env |= {"DEVBOX_WITH": ",".join(spec.services)}
    if spec.web_services:  # each web service with its port in the drone (drone/services.py)
        devbox_env |= {"DEVBOX_WEB": ",".join(f"{n}:{SERVICES[n].web.port}" for n in spec.web_services)}  # type: ignore[union-attr]
    if spec.repos:
        devbox_env |= {"DEVBOX_REPOS": ",".join(spec.repos), "DEVBOX_GIT_URL": HOST.git_url}
    if spec.dotfiles_url:
        devbox_env |= {"DEVBOX_DOTFILES_URL": spec.dotfiles_url, "DEVBOX_DOTFILES_BRANCH": spec.dotfiles_branch}
    if spec.tailscale:
        devbox_env |= {"DEVBOX_TAILSCALE": "1", "DEVBOX_TAILSCALE_SSH": "1" if spec.tailscale_ssh else "0"}
        if spec.login_server:
            devbox_env |= {"DEVBOX_TAILSCALE_LOGIN_SERVER": spec.login_server}
    if home != "%h":
        devbox_env |= {"HOME": home}
    for key in HOST.keys:
        if key.name in spec.keys:
            devbox_env |= {"DEVBOX_KEY_PROXY": "127.0.0.3:9119", **dict(key.env)}
    assert env == {**devbox_env, **dict(spec.env)}
    expected_secret = (
        [
            f"drone-{spec.name}-tailscale-authkey,type=mount,target=/run/secrets/tailscale-authkey,mode=0400,uid=1000,gid=1000"
        ]
        if spec.tailscale
        else []
    )
    assert option_values(argv, "--secret") == expected_secret
    assert option_values(argv, "--cpus") == ([] if spec.cpus is None else [f"{spec.cpus:g}"])
    assert option_values(argv, "--memory") == ([] if spec.memory is None else [spec.memory])
    expected_publish = [f"127.0.0.1:{host}:{port}" for host, port in spec.ports]
    expected_publish += [] if spec.ssh_port is None else [f"127.0.0.1:{spec.ssh_port}:2222"]
    for service, host in spec.web_ports:  # each web service's port on this server, to its port in the drone
        expected_publish.append(f"127.0.0.1:{host}:{SERVICES[service].web.port}")  # type: ignore[union-attr]
    if spec.mosh_ports:  # the same UDP range on both sides: mosh-server names the port it took
        expected_publish.append("127.0.0.1:{0}-{1}:{0}-{1}/udp".format(*spec.mosh_ports))
    assert option_values(argv, "--publish") == expected_publish
    # Only with web services: a published port reaches the drone's loopback, where they listen.
    assert option_values(argv, "--network") == (["pasta:--host-lo-to-ns-lo"] if spec.web_services else [])


def test_a_registered_drone_without_the_key_drop_in_mounts_no_secret(generator: Generator, tmp_path: Path) -> None:
    """What devbox start runs once the node is registered: the same unit, no --secret, still on the tailnet."""
    spec = cases()["tailnet"]
    with_key, _ = generate(generator, spec, tmp_path / "with")
    units, stderr = generate(generator, spec, tmp_path / "without", without=(spec.names.tailscale_dropin,))
    assert "unsupported key" not in stderr, stderr
    argv, argv_with_key = (podman_run_argv(u["drone-tailnode.service"]) for u in (units, with_key))
    assert option_values(argv, "--secret") == []
    secret = option_values(argv_with_key, "--secret")
    assert secret == [
        "drone-tailnode-tailscale-authkey,type=mount,target=/run/secrets/tailscale-authkey,mode=0400,uid=1000,gid=1000"
    ]
    assert "DEVBOX_TAILSCALE=1" in option_values(argv, "--env")
    assert sorted(a for a in argv_with_key if a not in ("--secret", *secret)) == sorted(argv)


def test_hostile_env_values_stay_one_argument_each(generator: Generator, tmp_path: Path) -> None:
    spec = cases()["hostile-env"]
    units, _ = generate(generator, spec, tmp_path)
    service = units["drone-x.service"]
    argv = podman_run_argv(service)
    env_args = option_values(argv, "--env")
    devbox_env = ["DEVBOX_DRONE=x", "DEVBOX_SYNCTHING=0", "DEVBOX_REPOS=acme/demo", f"DEVBOX_GIT_URL={HOST.git_url}"]
    assert sorted(env_args) == sorted([f"{k}={v}" for k, v in HOSTILE_ENV.items()] + devbox_env)
    # No value became an option of its own or a directive of its own.
    assert "--privileged" not in argv
    assert option_values(argv, "--label").count("io.devbox.repos=evil/repo") == 0
    assert [k for k, _ in parse_sections(service)["Service"]].count("ExecStart") == 1
    every_option = [a for a in argv if a.startswith("-")]
    assert every_option.count("--env") == len(HOSTILE_ENV) + 4


def test_hostile_devcontainer_values_stay_one_argument_each(generator: Generator, tmp_path: Path) -> None:
    """containerEnv and mounts from a repository: each value one argument, no option or directive of its own."""
    from tests.unit.cases import DEVCONTAINER_HOSTILE_ENV

    spec = cases()["devcontainer-hostile"]
    units, _ = generate(generator, spec, tmp_path)
    service = units["drone-evil.service"]
    argv = podman_run_argv(service)
    env = option_values(argv, "--env")
    for key, value in DEVCONTAINER_HOSTILE_ENV.items():
        assert f"{key}={value}" in env
    assert "--privileged" not in argv and argv[-1] == spec.image
    assert "drone-evil-vol-a.b_c-d:/srv/a@b+c" in option_values(argv, "-v")
    assert "io.devbox.repos=evil/repo" in option_values(argv, "--label")  # its own, once
    assert option_values(argv, "--label").count("io.devbox.repos=evil/repo") == 1
    assert [k for k, _ in parse_sections(service)["Service"]].count("ExecStart") == 1
    assert not any("npm ci" in a or "echo" in a for a in argv), "hooks go to the hooks file, never to podman run"


def test_generator_reports_an_unsupported_key(generator: Generator, tmp_path: Path) -> None:
    """The failure mode create relies on: a bad key gives no service and names the key."""
    quadlet_dir = tmp_path / "q"
    quadlet_dir.mkdir()
    (quadlet_dir / "drone-bad.container").write_text("[Container]\nImage=x\nBogusKey=4g\n")
    result = dryrun(generator.path, quadlet_dir)
    assert "unsupported key 'BogusKey'" in result.stderr
    assert "---drone-bad.service---" not in result.stdout


def test_devbox_explains_a_rejected_file_with_the_generators_words(
    generator: Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devbox.host import quadlet

    monkeypatch.setenv("DEVBOX_QUADLET", str(generator.path))
    (tmp_path / "drone-bad.container").write_text("[Container]\nImage=x\nBogusKey=1\n")
    (tmp_path / "drone-good.container").write_text("[Container]\nImage=localhost/x:1\n")
    problems = quadlet.problems(tmp_path, "drone-bad.container")
    assert "unsupported key 'BogusKey'" in problems[0]
    assert quadlet.problems(tmp_path, "drone-good.container") == []


def test_devbox_reads_the_generators_version(generator: Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    from devbox.host import quadlet

    monkeypatch.setenv("DEVBOX_QUADLET", str(generator.path))
    assert quadlet.generator_version() == generator.version


def test_memory_is_the_memory_key_where_the_generator_reads_it(generator: Generator, tmp_path: Path) -> None:
    """Memory= from Quadlet 5.5 on, PodmanArgs=--memory= before: both give podman run --memory."""
    spec = cases()["all-options"]
    (container,) = [
        f.text
        for f in render_drone(spec, replace(HOST, quadlet_version=generator.version))
        if f.relative_path.endswith(".container")
    ]
    reads_memory_key = generator.version >= (5, 5)
    assert (f"Memory={spec.memory}" in container.splitlines()) == reads_memory_key
    assert (f"PodmanArgs=--memory={spec.memory}" in container.splitlines()) != reads_memory_key
    units, stderr = generate(generator, spec, tmp_path)
    assert "unsupported key" not in stderr, stderr
    assert option_values(podman_run_argv(units["drone-acme-widgets.service"]), "--memory") == [spec.memory]


def test_what_each_form_means_to_each_generator(generator: Generator, tmp_path: Path) -> None:
    """Why rendering asks the version: 5.4 refuses Memory=, and every version still reads PodmanArgs=."""
    spec = cases()["all-options"]
    _, stderr = generate(generator, spec, tmp_path / "old", replace(HOST, quadlet_version=None))
    assert "unsupported key" not in stderr, stderr
    newest = replace(HOST, quadlet_version=(5, 8))
    if generator.version >= (5, 5):
        _, stderr = generate(generator, spec, tmp_path / "new", newest)
        assert "unsupported key" not in stderr, stderr
    else:
        quadlet_dir = tmp_path / "refused"
        quadlet_dir.mkdir()
        (container,) = [f for f in render_drone(spec, newest) if f.relative_path.endswith(".container")]
        (quadlet_dir / container.relative_path).write_text(container.text)
        assert "unsupported key 'Memory'" in dryrun(generator.path, quadlet_dir).stderr

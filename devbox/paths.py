"""Where devbox reads and writes, for the invoking user (XDG directories, the runtime directory).

Its own module, with nothing but the standard library, because every command needs it and
`devbox list` should not pay for the config parser it may not need.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """Where devbox reads and writes, for the invoking user."""

    config_file: Path
    quadlet_dir: Path
    unit_dir: Path
    runtime_dir: Path
    data_dir: Path = Path("/nonexistent/devbox-data")
    state_dir: Path = Path("/nonexistent/devbox-state")
    home: Path = Path("/nonexistent/home")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if env is None else env
        home = Path(env.get("HOME") or Path.home())
        config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        runtime = Path(env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
        config_file = Path(env.get("DEVBOX_CONFIG") or config_home / "devbox" / "config.toml")
        return cls(
            config_file=config_file,
            quadlet_dir=config_home / "containers" / "systemd",
            unit_dir=config_home / "systemd" / "user",
            runtime_dir=runtime,
            data_dir=Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "devbox",
            state_dir=Path(env.get("XDG_STATE_HOME") or home / ".local" / "state") / "devbox",
            home=home,
        )

    def socket_dir(self, name: str) -> Path:
        return self.runtime_dir / "devbox" / "drones" / name

    def creds_socket(self, name: str) -> Path:
        return self.socket_dir(name) / "creds.sock"

    def keys_socket(self, name: str) -> Path:
        """The model API key proxy's socket, beside the credential socket."""
        return self.socket_dir(name) / "keys.sock"

    def key_copy(self, key: str) -> Path:
        """Where an API key from op:// or env: is kept (0600) for the key proxy's LoadCredential=."""
        return self.state_dir / "credentials" / "keys" / f"{key}.key"

    @property
    def tools_dir(self) -> Path:
        """Scripts mounted read-only into every drone (git credential helper, gh wrapper, clone)."""
        return self.data_dir / "drone-tools"

    @property
    def drones_dir(self) -> Path:
        """Per-drone files mounted read-only into the drone (NAME/authorized_keys)."""
        return self.data_dir / "drones"

    @property
    def github_key_copy(self) -> Path:
        """Where a GitHub App key from op:// or env: is kept (0600) for the broker's LoadCredential=."""
        return self.state_dir / "credentials" / "github-app.pem"

    @property
    def known_hosts(self) -> Path:
        """Host keys of local drones, read from the drones themselves: `devbox ssh` checks them strictly."""
        return self.state_dir / "known_hosts"

    def drone_key(self, name: str) -> Path:
        """The private half of a drone's own SSH key pair (`create --new-ssh-key`), 0600."""
        return self.state_dir / "ssh" / f"{name}_ed25519"

    def lock_file(self, name: str) -> Path:
        """Drone NAME's lock (commands/locks.py), on the runtime tmpfs: the kernel drops a dead holder's flock."""
        return self.runtime_dir / "devbox" / "locks" / f"{name}.lock"

    def token_store(self, name: str) -> Path:
        """The broker's cached token (0600, on the runtime tmpfs, never mounted into a drone)."""
        return self.runtime_dir / "devbox" / "tokens" / f"{name}.json"

    def activity_file(self, name: str, kind: str = "broker") -> Path:
        """Activity records for the clean-up: `broker` (touched on every request), `touch`, `cpu`."""
        return self.state_dir / "activity" / f"{name}.{kind}"

    @property
    def compose_dir(self) -> Path:
        """The scratch devcontainer.json files of compose-based configurations (devcontainer/compose.py)."""
        return self.state_dir / "compose"

    def build_dir(self, name: str) -> Path:
        """Where a drone's repository is fetched to build its devcontainer.json (never mounted)."""
        return self.state_dir / "build" / name

    @property
    def rescue_dir(self) -> Path:
        """Where the clean-up exports the home volume of a drone whose work it could not push."""
        return self.state_dir / "rescue"


def templates_dir() -> Path:
    """Inside the wheel the templates sit in the package; in a checkout, beside it."""
    package = Path(__file__).resolve().parent  # devbox/
    for candidate in (package / "templates", package.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("devbox templates are missing from this installation")

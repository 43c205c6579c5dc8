"""Building a drone's broker from what systemd gives it: the config, the unit file, the App key credential."""

from __future__ import annotations

import os
import time
from pathlib import Path

from devbox.broker.pending import pending_file
from devbox.broker.service import DroneBroker
from devbox.config import load_config
from devbox.errors import DevboxError, ExitCode
from devbox.paths import Paths

KEY_CREDENTIAL = "github-app-key"
# A floor under the configured idle exit: idle exits are the only starts a drone can cause at will,
# and this keeps them well inside the unit's start limit.
MIN_IDLE_EXIT = 5.0


def app_key(env: dict[str, str] | None = None) -> bytes:
    """The App's private key from systemd's credential directory (LoadCredential=)."""
    env = dict(os.environ) if env is None else env
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise DevboxError("the broker has no credentials directory (LoadCredential= is missing)", ExitCode.CREDENTIALS)
    try:
        return (Path(directory) / KEY_CREDENTIAL).read_bytes()
    except OSError:
        raise DevboxError(f"the broker's {KEY_CREDENTIAL} credential is missing", ExitCode.CREDENTIALS) from None


def broker_for(name: str) -> tuple[DroneBroker, float]:
    from devbox.units.installed import require_drone

    paths = Paths.from_env()
    config = load_config(paths.config_file)
    record = require_drone(paths, name)
    app = None
    if config.github.enabled:
        from devbox.broker.github import AppConfig, GitHubApp

        assert config.github.app_id is not None
        app = GitHubApp(
            AppConfig(
                app_id=config.github.app_id,
                private_key_pem=app_key(),
                api_url=config.github.api_url,
                installation_id=config.github.installation_id,
            )
        )
    broker = DroneBroker(
        name=name,
        repos=tuple(record.repos),
        permissions=dict(record.declared.permissions),
        host=config.github.repo_base_url.split("://", 1)[1].split("/", 1)[0],
        app=app,
        store_path=paths.token_store(name),
        activity_path=paths.activity_file(name),
        clock=time.time,
        pending_path=pending_file(paths.state_dir),
    )
    return broker, max(config.broker.idle_exit, MIN_IDLE_EXIT)

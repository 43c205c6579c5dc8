"""A repository's files on this host, to read its devcontainer.json and build from it.

One shallow clone into a per-drone build directory. The repository is untrusted and nothing
from it runs here: no hooks, no submodules, no LFS or other filters, no local or ext:: transports,
an empty template directory. The token (read-only, for exactly this repository) goes to git
through a 0600 credential file beside the checkout, never argv or the environment, and is gone
when the clone is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from devbox.errors import DevboxError, ExitCode

# -c settings that keep a clone from running anything the repository brings.
SAFE_GIT_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "filter.lfs.smudge=",
    "filter.lfs.process=",
    "filter.lfs.required=false",
    "protocol.file.allow=never",
    "protocol.ext.allow=never",
    "submodule.recurse=false",
    "credential.helper=",
)
# Nothing from the caller's environment that could point git elsewhere or run something.
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_LFS_SKIP_SMUDGE": "1",
    "GIT_ASKPASS": "/bin/false",
}

Run = Callable[[Sequence[str], dict[str, str]], subprocess.CompletedProcess[str]]


def _run(argv: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, check=False, timeout=600)


def clone_argv(url: str, checkout: Path, credentials: Path | None) -> list[str]:
    argv = ["git"]
    for setting in SAFE_GIT_CONFIG:
        argv += ["-c", setting]
    if credentials is not None:
        argv += ["-c", f"credential.helper=store --file={credentials}"]
    return [*argv, "clone", "--quiet", "--depth=1", "--no-recurse-submodules", "--template=", "--", url, str(checkout)]


def _environment() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")
    return {key: os.environ[key] for key in keep if key in os.environ} | _GIT_ENV


def clone(url: str, build_dir: Path, token: str | None, run: Run | None = None) -> Path:
    """BUILD_DIR/checkout, a shallow clone of URL; BUILD_DIR is replaced. On failure nothing is left."""
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True, mode=0o700)
    checkout = build_dir / "checkout"
    secrets = Path(tempfile.mkdtemp(prefix=".credentials-", dir=build_dir))
    try:
        credentials = None
        if token is not None:
            credentials = secrets / "git-credentials"
            parts = urlsplit(url)
            fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(f"{parts.scheme}://x-access-token:{token}@{parts.netloc}\n")
        result = (run or _run)(clone_argv(url, checkout, credentials), _environment())
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            if token:
                last = last.replace(token, "***")
            raise DevboxError(
                f"could not fetch {url} to read its devcontainer.json: {last} (--no-devcontainer skips it)",
                ExitCode.FAILURE,
            )
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(secrets, ignore_errors=True)
    return checkout

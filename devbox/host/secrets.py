"""Secret references: `op://vault/item/field` (1Password, onepassword-sdk), `env:NAME`, `file:PATH`.

A resolved secret is a `Secret`, whose repr never shows the value. Errors name the
reference (never the value) and carry ExitCode.SECRET. References are checked
offline (the SDK's own validator for op://) before anything is fetched.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devbox import __version__
from devbox.errors import DevboxError, ExitCode

OP_TOKEN_ENV = "OP_SERVICE_ACCOUNT_TOKEN"
RATE_LIMIT_RETRIES = 3


@dataclass(frozen=True)
class Secret:
    reference: str
    value: str = field(repr=False)

    def __str__(self) -> str:
        return f"<secret from {self.reference}>"


def _error(reference: str, reason: str) -> DevboxError:
    return DevboxError(f"cannot resolve secret {reference}: {reason}", ExitCode.SECRET)


def validate_reference(reference: str) -> str:
    """Refuse a malformed reference before any call is made."""
    from devbox.values import printable

    if not printable(reference):
        raise DevboxError(
            "invalid secret reference: it holds a line break or another non-printing character", ExitCode.SECRET
        )
    if reference.startswith("op://"):
        from onepassword.secrets import Secrets

        try:
            Secrets.validate_secret_reference(reference)
        except Exception as exc:  # the SDK raises a plain Exception with its reason
            raise _error(reference, str(exc).splitlines()[0]) from None
        return reference
    if reference.startswith("env:") and reference[4:].replace("_", "a").isalnum():
        return reference
    if reference.startswith("file:") and len(reference) > 5:
        return reference
    raise DevboxError(
        # Not shown: what is here instead of a reference is often the secret itself, pasted in.
        "invalid secret reference (not shown: it may be the secret itself): "
        "use op://VAULT/ITEM/FIELD, env:NAME or file:PATH",
        ExitCode.SECRET,
    )


def read_secret_file(path: Path, reference: str) -> str:
    """A secret file must be a regular file that only its owner can read."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise _error(reference, f"{path} is not a regular file")
        if info.st_mode & 0o077:
            raise _error(reference, f"{path} can be read by others: chmod 600 {path}")
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise _error(reference, f"{path} does not exist") from None
    except PermissionError:
        raise _error(reference, f"{path} is not readable") from None


def check_private_key_file(reference: str | None) -> None:
    """A `file:` GitHub App key the broker will load: there, the user's own, 0600 or stricter, an RSA
    private key. Other references are resolved (and so checked) when create copies the key."""
    if not reference or not reference.startswith("file:"):
        return
    path = Path(os.path.expanduser(reference[5:]))
    try:
        info = path.stat()
    except OSError:
        raise _error(reference, f"{path} does not exist or cannot be read") from None
    if info.st_uid != os.getuid():
        raise _error(reference, f"{path} is not owned by you")
    text = read_secret_file(path, reference)  # a regular file, mode 0600 or stricter
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        raise _error(reference, f"{path} is not a PEM private key without a passphrase") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _error(reference, f"{path} is not an RSA private key (a GitHub App key is)")


ClientFactory = Callable[[str], Any]  # token -> awaitable of an object with .secrets.resolve(ref)


def _sdk_client(token: str) -> Any:
    from onepassword.client import Client

    return Client.authenticate(auth=token, integration_name="devbox", integration_version=__version__)


@dataclass
class Resolver:
    """Resolves references; the 1Password client is made only when an op:// reference needs it."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    op_token_file: Path | None = None
    client_factory: ClientFactory = _sdk_client
    sleep: Callable[[float], None] = time.sleep

    def resolve(self, reference: str) -> Secret:
        validate_reference(reference)
        if reference.startswith("env:"):
            name = reference[4:]
            if not self.env.get(name):
                raise _error(reference, f"environment variable {name} is not set")
            return Secret(reference, self.env[name])
        if reference.startswith("file:"):
            path = Path(os.path.expanduser(reference[5:]))
            return Secret(reference, read_secret_file(path, reference))
        return Secret(reference, self._resolve_op(reference))

    def _op_token(self, reference: str) -> str:
        token = self.env.get(OP_TOKEN_ENV)
        if token:
            return token
        if self.op_token_file is not None and self.op_token_file.exists():
            return read_secret_file(self.op_token_file, f"file:{self.op_token_file}")
        where = f" or put it in {self.op_token_file} (mode 600)" if self.op_token_file else ""
        raise _error(reference, f"no 1Password service account token: set {OP_TOKEN_ENV}{where}")

    def _resolve_op(self, reference: str) -> str:
        import asyncio  # here, not at the top: every command that reads the config validates references

        from onepassword.errors import RateLimitExceededException

        token = self._op_token(reference)

        async def fetch() -> str:
            client = await self.client_factory(token)
            return await client.secrets.resolve(reference)

        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                value = asyncio.run(fetch())
            except RateLimitExceededException:
                if attempt == RATE_LIMIT_RETRIES:
                    raise _error(reference, "1Password keeps answering with a rate limit; try again later") from None
                self.sleep(2.0**attempt)
                continue
            except Exception as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise _error(reference, reason.replace(token, "<token>")[:200]) from None
            if not value:
                raise _error(reference, "1Password returned an empty value")
            return value
        raise AssertionError("unreachable")

"""The public keys a drone's sshd accepts: `--ssh-key FILE`, else `~/.ssh/*.pub`, plus the config's.

A key line is checked for shape only (type, base64 blob, optional comment); a file that
holds a private key is refused without its content ever reaching a message.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from devbox.errors import invalid
from devbox.values import check_printable

KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_COMMENT = re.compile(r"[\x20-\x7e]{0,200}")
MAX_KEY_FILE = 64 * 1024


def parse_public_key(line: str, source: str) -> str:
    """One OpenSSH public key line, normalised to `TYPE BLOB [COMMENT]`."""
    if "PRIVATE KEY" in line:
        raise invalid(f"{source} is a private key: give the public key (.pub)")
    fields = line.strip().split(None, 2)
    if len(fields) < 2 or fields[0] not in KEY_TYPES:
        raise invalid(f"{source}: not an SSH public key (expected a line such as 'ssh-ed25519 AAAA... me@laptop')")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        blob = b""
    # The blob starts with the key type again, as a length-prefixed string.
    if blob[4 : 4 + len(fields[0])] != fields[0].encode():
        raise invalid(f"{source}: the key data of this {fields[0]} key is damaged")
    comment = fields[2] if len(fields) == 3 else ""
    if not _COMMENT.fullmatch(comment):
        raise invalid(f"{source}: the key comment has characters an authorized_keys line cannot hold")
    # Between the fields too: Python's split() also splits at U+2028 and U+0085, sshd does not.
    check_printable(line.strip(" \t\r\n").replace("\t", " "), f"{source}: an SSH public key line")
    return " ".join(fields[:2] + ([comment] if comment else []))


def read_key_file(path: Path) -> list[str]:
    """Every key in a public key file (blank lines and # comments skipped)."""
    source = str(path)
    try:
        if path.stat().st_size > MAX_KEY_FILE:
            raise invalid(f"{source}: too large for a public key file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise invalid(f"{source}: no such file") from None
    except IsADirectoryError:
        raise invalid(f"{source}: is a directory, not a public key file") from None
    except PermissionError:
        raise invalid(f"{source}: not readable") from None
    except UnicodeDecodeError:
        raise invalid(f"{source}: not an SSH public key") from None
    # Lines end at "\n" as sshd reads them; parse_public_key refuses a U+2028 (or \r inside) left in one.
    lines = (line for line in text.split("\n") if line.strip() and not line.startswith("#"))
    keys = [parse_public_key(line, source) for line in lines]
    if not keys:
        raise invalid(f"{source}: holds no SSH public key")
    return keys


def default_key_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / ".ssh").glob("*.pub") if p.is_file())


def gather_keys(files: Sequence[Path], configured: Iterable[str], home: Path, use_defaults: bool = True) -> list[str]:
    """`--ssh-key` files (or the user's ~/.ssh/*.pub when none are given), then the config's keys, deduplicated."""
    sources = list(files) or (default_key_files(home) if use_defaults else [])
    keys: list[str] = []
    for path in sources:
        keys.extend(read_key_file(path))
    keys.extend(configured)
    unique: dict[str, str] = {}
    for key in keys:
        unique.setdefault(" ".join(key.split()[:2]), key)
    return list(unique.values())


def generate_keypair(comment: str) -> tuple[str, str]:
    """A new ed25519 key pair: (private key in OpenSSH format, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} {comment}"

"""Single values from a user or a repository: what is accepted, how it is parsed, and the one
line that refuses it. The bottom of the tree: the config, the drone spec and the devcontainer
reader all check values here, so a value is judged the same wherever it comes from.
"""

from __future__ import annotations

import re
import unicodedata

from devbox.errors import DevboxError, invalid

# DESIGN.md asks for two characters at least; one letter is as good a hostname
# and unit name as two, so a single [a-z] is accepted too.
_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?")
_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
_REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}")
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([bkmg]?)", re.IGNORECASE)
_MEMORY_FACTOR = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MEMORY_MIN = 6 * 1024**2  # Podman refuses less than 6 MiB
# Unicode categories no value may hold: controls (NUL, newline, U+0085...), format characters
# (U+FEFF, bidirectional overrides, zero-width ones), line and paragraph separators (U+2028,
# U+2029), surrogates, private-use and unassigned code points.
_NON_PRINTING = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
RESERVED_ENV_PREFIX = "DEVBOX_"
# A path that goes into a unit value (Volume=, LoadCredential=) needing no quoting; Quadlet splits on ':'.
PLAIN_PATH = re.compile(r"/[A-Za-z0-9._/@+-]*")
# The http(s) URLs the config takes (GitHub API, git, Headscale).
HTTP_URL = re.compile(r"https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")


_KEY_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,29}[a-z0-9])?")


def validate_key_name(name: object) -> str:
    """A model API key's name ([keys.NAME], --key NAME): it is a URL path segment in the drone."""
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
        raise invalid(
            f"invalid key name {name!r}: use 1 to 31 of a-z, 0-9 and '-', starting with a letter, not ending with '-'"
        )
    return name


def is_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None and "--" not in name and name.isascii()


def validate_name(name: str) -> str:
    if not is_name(name):
        raise invalid(
            f"invalid drone name {name!r}: use 1 to 40 of a-z, 0-9 and '-', "
            "starting with a letter, not ending with '-', without '--'"
        )
    return name


def validate_repo(repo: str) -> str:
    owner, sep, rest = repo.partition("/")
    valid = (
        sep == "/"
        and _OWNER.fullmatch(owner) is not None
        and _REPO.fullmatch(rest) is not None
        and rest not in (".", "..")
        and not rest.endswith(".git")
    )
    if not valid:
        raise invalid(f"invalid repository {repo!r}: expected OWNER/REPO, for example acme/widgets")
    return repo


def name_from_repo(repo: str) -> str:
    """`Acme/My_Repo.js` -> `acme-my-repo-js`; refused (never rewritten further) when not a valid name."""
    candidate = validate_repo(repo).lower().replace("/", "-").replace("_", "-").replace(".", "-")
    try:
        return validate_name(candidate)
    except DevboxError:
        raise invalid(
            f"cannot derive a drone name from {repo!r} ({candidate!r} is not a valid name): give NAME explicitly"
        ) from None


def validate_image(image: str) -> str:
    if not _IMAGE.fullmatch(image) or "//" in image:
        raise invalid(f"invalid image reference {image!r}: expected something like registry/name:tag")
    return image


def parse_memory(value: str) -> str:
    """Podman's size syntax: a number with an optional b, k, m or g; at least 6m."""
    match = _MEMORY.fullmatch(value.strip())
    if not match:
        raise invalid(f"invalid memory size {value!r}: use a number with b, k, m or g, for example 512m or 4g")
    number, unit = match.groups()
    if float(number) * _MEMORY_FACTOR[unit.lower()] < _MEMORY_MIN:
        raise invalid(f"invalid memory size {value!r}: Podman needs at least 6m")
    return f"{number}{unit.lower()}"


def parse_cpus(value: str | float) -> float:
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise invalid(f"invalid cpu count {value!r}: use a number greater than 0, for example 2 or 0.5") from None
    if not 0 < cpus <= 1024:
        raise invalid(f"invalid cpu count {value!r}: use a number greater than 0, for example 2 or 0.5")
    return cpus


def parse_port(value: str | int) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if not 1 <= port <= 65535:
        raise invalid(f"invalid port {value!r}: use a number from 1 to 65535")
    return port


_DURATION = re.compile(r"([0-9]{1,6})([smhd])")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> int:
    """`90s`, `30m`, `12h`, `14d` -> seconds (at least one second)."""
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match or int(match.group(1)) == 0:
        raise invalid(f"invalid duration {value!r}: use a number with s, m, h or d, for example 90s, 30m, 12h or 14d")
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling parse_duration reads back: 43200 -> `12h`."""
    whole = int(seconds)
    for unit in ("d", "h", "m"):
        if whole and whole % _DURATION_SECONDS[unit] == 0:
            return f"{whole // _DURATION_SECONDS[unit]}{unit}"
    return f"{whole}s"


def printable(value: str) -> bool:
    """No line or record break for systemd, Quadlet, git or Python (str.splitlines splits at
    \\v, \\f, \\x1c-\\x1e, U+0085, U+2028 and U+2029 too), nothing invisible, and no space but
    the ASCII one (Go and Python trim the others at the ends of a line)."""
    return all(
        ch == " " or (unicodedata.category(ch) not in _NON_PRINTING and not (ch > "\x7f" and ch.isspace()))
        for ch in value
    )


def check_printable(value: str, what: str) -> str:
    """VALUE, or the one refusal (exit 3) naming WHAT, never the value itself (it may not print)."""
    if not printable(value):
        raise invalid(
            f"{what}: newlines, control characters, invisible characters and non-ASCII spaces are not allowed"
        )
    return value


def validate_env_value(key: str, value: str) -> str:
    return check_printable(value, f"invalid value for environment variable {key}")


def parse_env(item: str) -> tuple[str, str]:
    """`KEY=VALUE` from the command line."""
    key, sep, value = item.partition("=")
    if not sep:
        raise invalid(f"invalid --env {item!r}: expected KEY=VALUE")
    return validate_env_key(key), validate_env_value(key, value)


def validate_env_key(key: str) -> str:
    if not _ENV_KEY.fullmatch(key):
        raise invalid(
            f"invalid environment variable name {key!r}: use letters, digits and '_', not starting with a digit"
        )
    if key.startswith(RESERVED_ENV_PREFIX):
        raise invalid(
            f"invalid environment variable name {key!r}: names starting with {RESERVED_ENV_PREFIX} are devbox's own"
        )
    return key


def rough_duration(seconds: float | None) -> str:
    """For people: the two largest units, `2d3h`, `4m10s`; `-` for unknown (format_duration is exact)."""
    if seconds is None:
        return "-"
    days, rest = divmod(round(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# A host name (RFC 1123 labels) or an IPv4 address; IPv6 addresses are written in brackets.
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def validate_host(host: str, what: str) -> str:
    """A host name, an IPv4 address or a bracketed IPv6 address ([2001:db8::1]); never a URL or a pattern."""
    import ipaddress

    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
            return host
        except ValueError:
            pass
    elif _HOSTNAME.fullmatch(host) and not host.replace(".", "").isdigit():
        return host
    else:
        try:
            ipaddress.IPv4Address(host)
            return host
        except ValueError:
            pass
    raise invalid(f"{what}: {host!r} is not a host name, an IPv4 address or an IPv6 address in brackets")


_LOGIN_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def validate_login_name(name: str, what: str) -> str:
    """A user name that goes into `ssh USER@HOST` and ~/.ssh/config: plain, never an option."""
    if not _LOGIN_NAME.fullmatch(name):
        raise invalid(f"{what} {name!r} is not a plain user name (a-z, 0-9, '_' and '-', up to 32)")
    return name

"""A drone's egress policy: `open`, `fenced`, or `allow:HOST[:PORT],...` (README: The network fence).

The text is kept in the drone's unit as the `egress` label and read back here; it is the one
spelling of a policy, so a policy written and read back is the same policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from devbox.errors import DevboxError, invalid
from devbox.values import check_printable, parse_port, validate_host

OPEN = "open"
FENCED = "fenced"
ALLOW = "allow"
DEFAULT_NEW = FENCED  # new drones; a unit without the label is `open` (how drones ran before the fence)
MAX_ALLOWED = 64
USAGE = "open, fenced or allow:HOST[:PORT],... (for example allow:api.example.com:443,pypi.org)"


@dataclass(frozen=True)
class Destination:
    host: str  # a host name, an IPv4 address or a bracketed IPv6 address
    port: int | None = None  # None: every port

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class EgressPolicy:
    mode: str  # OPEN, FENCED or ALLOW
    allowed: tuple[Destination, ...] = ()

    @property
    def fenced(self) -> bool:
        """Anything but open: the fence is applied to the drone's network namespace."""
        return self.mode != OPEN

    def __str__(self) -> str:
        if self.mode == ALLOW:
            return "allow:" + ",".join(map(str, self.allowed))
        return self.mode


def _destination(item: str) -> Destination:
    what = "invalid --egress destination"
    if "/" in item or "@" in item:
        raise invalid(f"{what} {item!r}: give HOST[:PORT], not a URL or an address range")
    if item.startswith("["):
        host, close, rest = item.partition("]")
        host += close
        if rest and not rest.startswith(":"):
            raise invalid(f"{what} {item!r}: expected [IPV6] or [IPV6]:PORT")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_or_empty = item.partition(":")
        port_text = port_text_or_empty if sep else None
    port = None if port_text is None else parse_port(port_text)
    return Destination(validate_host(host, what), port)


def parse_egress(text: str) -> EgressPolicy:
    """`open`, `fenced` or `allow:HOST[:PORT],...`; anything else is refused in one line."""
    check_printable(text, "invalid egress policy")
    if text in (OPEN, FENCED):
        return EgressPolicy(text)
    prefix, sep, rest = text.partition(":")
    if prefix != ALLOW or not sep:
        raise invalid(f"invalid egress policy {text!r}: use {USAGE}")
    items = rest.split(",")
    if not rest or "" in items:
        raise invalid(f"invalid egress policy {text!r}: allow: needs HOST[:PORT] items separated by commas")
    if len(items) > MAX_ALLOWED:
        raise invalid(f"invalid egress policy: at most {MAX_ALLOWED} allow: destinations")
    allowed = tuple(dict.fromkeys(_destination(item) for item in items))
    return EgressPolicy(ALLOW, allowed)


def read_egress(label: str | None) -> EgressPolicy:
    """The policy a unit's label declares, leniently (a damaged label must not stop `list`):
    absent is `open`, as drones made before the fence ran; unreadable is `fenced`, never open."""
    if label is None:
        return EgressPolicy(OPEN)
    try:
        return parse_egress(label)
    except DevboxError:
        return EgressPolicy(FENCED)

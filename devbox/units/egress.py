"""A drone's unit with another egress policy: the fence's own lines swapped, the rest kept as it is.

Re-rendering the whole unit would take today's config and SSH keys instead of the drone's; the
fence's lines (render.egress_blocks) sit at fixed places, after the labels in [Container] and first
in [Service], so they are swapped there and nothing else changes.
"""

from __future__ import annotations

from dataclasses import replace

from devbox.context import HostFacts
from devbox.drone.spec import DroneSpec
from devbox.errors import DevboxError, ExitCode
from devbox.units.render import egress_blocks


def _hand_edited(name: str) -> DevboxError:
    return DevboxError(
        f"drone {name}'s unit does not have the fence lines devbox wrote (edited by hand?): recreate the drone",
        ExitCode.DAMAGED,
    )


def with_egress(text: str, declared: DroneSpec, egress: str, host: HostFacts) -> str:
    """TEXT (the drone's .container unit, whose labels DECLARED came from) with policy EGRESS."""
    old_container, old_service = egress_blocks(declared, host)
    new_container, new_service = egress_blocks(replace(declared, egress=egress), host)
    lines = text.splitlines(keepends=True)
    if old_container:
        text = _swap(text, old_container, new_container, declared.name)
    else:
        last_label = max((i for i, line in enumerate(lines) if line.startswith("Label=")), default=None)
        if last_label is None:
            raise _hand_edited(declared.name)
        text = "".join(lines[: last_label + 1]) + new_container + "".join(lines[last_label + 1 :])
    if old_service:
        return _swap(text, old_service, new_service, declared.name)
    head, found, tail = text.partition("\n[Service]\n")
    if not found:
        raise _hand_edited(declared.name)
    return head + found + new_service + tail


def _swap(text: str, old: str, new: str, name: str) -> str:
    if text.count(old) != 1:
        raise _hand_edited(name)
    return text.replace(old, new)

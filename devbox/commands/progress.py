"""The progress callbacks the use-cases take: the current step in words, and bytes moved.

The CLI passes its spinner (cli/spinner.py); scripts and tests pass nothing.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]
ByteProgress = Callable[[int], None]


def no_progress(_: object) -> None:
    """Report nothing."""

"""Running a program as a process with an argv list (never a shell), its output line by line.

The one seam for the tools devbox drives as processes (podman build, the Dev Containers CLI):
tests replace the runner and see exactly what would run.
"""

from __future__ import annotations

import subprocess
from collections import deque
from collections.abc import Callable, Iterable

# Run argv, hand every output line (stdout and stderr merged) to on_line, return the exit status.
# FileNotFoundError when the program is missing.
Runner = Callable[[list[str], Callable[[str], None]], int]


def run_process(argv: list[str], on_line: Callable[[str], None]) -> int:
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                on_line(line.rstrip("\n"))
            return proc.wait()
        except BaseException:  # KeyboardInterrupt: do not leave the child behind
            proc.terminate()
            proc.wait()
            raise


def last_error(lines: deque[str] | Iterable[str], marks: tuple[str, ...] = ("error",)) -> str:
    """The last line that starts like an error (case aside), else the last non-empty line."""
    lines = list(lines)
    for line in reversed(lines):
        if line.strip().lower().startswith(marks):
            return line.strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), "no output")

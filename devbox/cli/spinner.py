"""A one-line spinner with the current step and its seconds, on stderr when it is a terminal.

Piped or redirected, it prints nothing: scripts read stdout and the exit code. The line
is cleared before the command prints its result or its error.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Spinner:
    def __init__(self, stream: TextIO | None = None, interval: float = 0.1, enabled: bool | None = None) -> None:
        self._stream = stream or sys.stderr
        self._interval = interval
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._step = ""
        self._since = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, step: str) -> None:
        """The Progress callback the use-cases take: a new current step."""
        with self._lock:
            self._step, self._since = step, time.monotonic()
        if self._enabled and self._thread is None:
            self._thread = threading.Thread(target=self._spin, name="devbox-spinner", daemon=True)
            self._thread.start()

    def _spin(self) -> None:
        frame = 0
        while not self._stop.is_set():
            with self._lock:
                line = f"\r\x1b[2K{FRAMES[frame % len(FRAMES)]} {self._step} ({time.monotonic() - self._since:.0f}s)"
                self._stream.write(line)
                self._stream.flush()
            frame += 1
            self._stop.wait(self._interval)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._stream.write("\r\x1b[2K")
            self._stream.flush()
            self._thread = None

    def __enter__(self) -> Spinner:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

"""The progress bar of long checks, on stderr."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

#: Seconds a check runs before a progress bar appears.
PROGRESS_DELAY = 1.0
#: Seconds between two redraws of the progress bar.
PROGRESS_INTERVAL = 0.1


class Progress:
    """A one-line progress bar on stderr, drawn only for checks that run
    longer than :data:`PROGRESS_DELAY` seconds.

    ``enabled``: ``None`` draws only when the stream is a terminal, ``True``
    always, ``False`` never. A bar that reaches 100% ends with a newline; one
    left unfinished (the check evaluated fewer points than expected, as probe
    mode does) is erased when the check ends.
    """

    def __init__(
        self,
        enabled: bool | None,
        stream: TextIO | None = None,
        delay: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.stream = stream
        self.delay = PROGRESS_DELAY if delay is None else delay
        self.clock = clock
        self.started = clock()
        self.last_draw = -math.inf
        self.width = 0  # characters on the line now
        self.done = False

    def _out(self) -> TextIO | None:
        stream = self.stream if self.stream is not None else sys.stderr
        if self.enabled is False or stream is None:
            return None
        if self.enabled is None:
            try:
                if not stream.isatty():
                    return None
            except (AttributeError, ValueError):
                return None
        return stream

    def update(self, count: int, total: int) -> None:
        if self.done or self.enabled is False:
            return
        now = self.clock()
        elapsed = now - self.started
        finished = count >= total
        if elapsed < self.delay and not (finished and self.width):
            return
        if not finished and now - self.last_draw < PROGRESS_INTERVAL:
            return
        stream = self._out()
        if stream is None:
            self.done = True
            return
        self.last_draw = now
        self._draw(stream, min(count, total), total, elapsed, finished)

    def _draw(self, stream: TextIO, count: int, total: int, elapsed: float, end: bool) -> None:
        fraction = count / total if total else 1.0
        filled = round(24 * fraction)
        line = (
            f"gradguard: [{'#' * filled}{'.' * (24 - filled)}] {100 * fraction:3.0f}% "
            f"{count}/{total} evaluations and VJPs, {elapsed:.1f} s"
        )
        pad = " " * max(0, self.width - len(line))
        try:
            stream.write("\r" + line + pad + ("\n" if end else ""))
            stream.flush()
        except (OSError, ValueError):  # closed or broken stream: stay quiet
            self.done = True
            return
        self.width = 0 if end else len(line)
        if end:
            self.done = True

    def close(self) -> None:
        """Erase a bar left unfinished."""
        if self.done or not self.width:
            self.done = True
            return
        self.done = True
        stream = self._out()
        if stream is None:
            return
        try:
            stream.write("\r" + " " * self.width + "\r")
            stream.flush()
        except (OSError, ValueError):
            pass
        self.width = 0

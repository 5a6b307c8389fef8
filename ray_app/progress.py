"""Live status line for a terminal: steps done and to go, sps, ETA, the last window's return.

Only on a TTY (redirected output, CI logs and `ray job logs` get the per-window lines alone). The
line is redrawn in place after every round and cleared before a window line is printed.
"""

from __future__ import annotations

import shutil
import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class StatusLine:
    def __init__(self, total_steps: int, stream=None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total_steps
        self.start_time = time.time()
        self.start_steps: int | None = None
        self.last_return: float | None = None
        self.shown = False

    def update(self, steps: int) -> None:
        if not self.enabled:
            return
        if self.start_steps is None:  # a resumed run: rate from the steps done in this process
            self.start_steps = steps
        elapsed = time.time() - self.start_time
        rate = (steps - self.start_steps) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - steps) / rate if rate > 0 else float("nan")
        ret = "-" if self.last_return is None else f"{self.last_return:.2f}"
        text = (f"{100 * steps / self.total:5.1f}% | {steps:,}/{self.total:,} steps, {max(0, self.total - steps):,} to go"
                f" | {rate:,.0f} sps | ETA {_duration(eta) if eta == eta else '?'} | last return {ret}")
        width = shutil.get_terminal_size((120, 20)).columns - 1
        self.stream.write("\r" + text[:width].ljust(width))
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.enabled and self.shown:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()
            self.shown = False

    def window(self, row: dict) -> None:
        if row.get("return_mean") is not None:
            self.last_return = row["return_mean"]

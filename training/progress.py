"""Driver-side training progress: polls `<run_dir>/progress.json`, which rank 0 rewrites as it trains.

A file rather than a Ray callback because Ray Train V2 callbacks run in the controller actor, not the driver.
On a terminal: a live bar (rich). Otherwise (CI logs, `| tee`, `nohup`) a live bar would print only once, at the
end, so plain lines (step, loss, steps/s, ETA; validation case i/n) go out every `VOXRAY_PROGRESS_INTERVAL`
seconds (default 30; 0 = whenever the step changes).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

__all__ = ["ProgressBar", "WindowProgress", "progress_interval", "format_line", "INTERVAL_ENV"]

INTERVAL_ENV = "VOXRAY_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0


def progress_interval(default: float = DEFAULT_INTERVAL) -> float:
    """Seconds between progress lines in non-terminal output (`VOXRAY_PROGRESS_INTERVAL`, else `default`)."""
    raw = os.environ.get(INTERVAL_ENV)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        log.warning("%s=%r is not a number of seconds ≥ 0; using %g", INTERVAL_ENV, raw, default)
        return default
    return value


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def format_line(p: dict[str, Any], total: int) -> str:
    """One progress line from a progress.json payload."""
    step, its = int(p["step"]), float(p.get("it_s") or 0.0)
    if p.get("phase") == "validate":
        return f"validate at step {step}: case {p['val_done']}/{p['val_total']}"
    eta = _duration((total - step) / its) if its > 0 and step < total else "-"
    return (f"train step {step}/{total} ({100 * step / max(total, 1):.0f}%)  loss {p['loss']:.4f}  "
            f"lr {p['lr']:.2e}  {its:.2f} steps/s  ETA {eta}")


class ProgressBar:
    """Context manager reporting step/total, loss, lr, steps/s and ETA while training runs elsewhere.

    `stream` (default stdout) decides the form: a bar on a terminal, lines every `line_interval` seconds
    (default `progress_interval()`) otherwise.
    """

    def __init__(self, run_dir: Path, total: int, *, enabled: bool = True, interval: float = 1.0,
                 stream: IO[str] | None = None, line_interval: float | None = None) -> None:
        self.path, self.total, self.enabled = Path(run_dir) / "progress.json", total, enabled
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.line_interval = progress_interval() if line_interval is None else max(line_interval, 0.0)
        self.interval = interval if self.tty else min(interval, max(self.line_interval, 0.05))
        self._stop = threading.Event()
        self._last_key: tuple | None = None
        self._last_line = 0.0

    def __enter__(self) -> "ProgressBar":
        if not self.enabled:
            return self
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
                                console=Console(file=self.stream))
            self.task = self.bar.add_task("train", total=self.total, info="starting workers…")
            self.bar.start()
        self._last_line = time.monotonic()
        self.thread = threading.Thread(target=self._poll, daemon=True, name="voxray-progress")
        self.thread.start()
        return self

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _update(self, final: bool = False) -> None:
        p = self._read()
        if p is None:
            return
        if self.tty:
            info = (f"validating case {p['val_done']}/{p['val_total']}" if p.get("phase") == "validate" else
                    f"loss {p['loss']:.4f}  lr {p['lr']:.2e}  {p['it_s']:.2f} it/s")
            self.bar.update(self.task, completed=p["step"], info=info)
            return
        key = (p.get("phase"), p["step"], p.get("val_done"))
        now = time.monotonic()
        if key == self._last_key or (not final and now - self._last_line < self.line_interval):
            return
        self._last_key, self._last_line = key, now
        self.stream.write(format_line(p, self.total) + "\n")
        self.stream.flush()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._update()

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self.thread.join(timeout=2)
            self._update(final=True)
            if self.tty:
                self.bar.stop()


PREDICT_INTERVAL = 5.0
"""Default seconds between `predict` progress lines: a volume takes tens of seconds, not hours."""


class WindowProgress:
    """`predict` progress as a callback `(windows_done, windows_total)`: a bar on a terminal, else a line (windows
    done, windows/s, ETA) every `line_interval` seconds and at the end. Writes to stderr by default, so `--json`
    output on stdout stays machine-readable."""

    def __init__(self, label: str = "predict", *, stream: IO[str] | None = None,
                 line_interval: float | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.line_interval = progress_interval(PREDICT_INTERVAL) if line_interval is None else max(line_interval, 0)
        self.bar: Any = None
        self._start = self._last = 0.0
        self._done = -1

    def __enter__(self) -> "WindowProgress":
        self._start = self._last = time.monotonic()
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn("windows"),
                                TimeRemainingColumn(), console=Console(file=self.stream))
            self.task = self.bar.add_task(self.label, total=None)
            self.bar.start()
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)
            return
        now = time.monotonic()
        if done == self._done or (done < total and now - self._last < self.line_interval):
            return
        self._done, self._last = done, now
        self.stream.write(self.line(done, total, now - self._start) + "\n")
        self.stream.flush()

    def line(self, done: int, total: int, elapsed: float) -> str:
        """`predict: windows 120/504 (24%)  3.10 windows/s  ETA 2m04s`."""
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = _duration((total - done) / rate) if rate > 0 and done < total else "-"
        return (f"{self.label}: windows {done}/{total} ({100 * done / max(total, 1):.0f}%)  {rate:.2f} windows/s  "
                f"ETA {eta}")

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

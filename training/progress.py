"""Driver-side progress bar (rich): polls `<run_dir>/progress.json`, which rank 0 rewrites twice a second.

A file rather than a Ray callback because Ray Train V2 callbacks run in the controller actor, not the driver.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

__all__ = ["ProgressBar"]


class ProgressBar:
    """Context manager showing step/total, loss, lr, it/s and ETA while training runs elsewhere."""

    def __init__(self, run_dir: Path, total: int, *, enabled: bool = True, interval: float = 1.0) -> None:
        self.path, self.total, self.enabled, self.interval = Path(run_dir) / "progress.json", total, enabled, interval
        self._stop = threading.Event()

    def __enter__(self) -> "ProgressBar":
        if not self.enabled:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), transient=False)
        self.task = self.bar.add_task("train", total=self.total, info="starting workers…")
        self.bar.start()
        self.thread = threading.Thread(target=self._poll, daemon=True, name="voxray-progress")
        self.thread.start()
        return self

    def _update(self) -> None:
        try:
            p = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        info = f"loss {p['loss']:.4f}  lr {p['lr']:.2e}  {p['it_s']:.2f} it/s"
        self.bar.update(self.task, completed=p["step"], info=info)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._update()

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self.thread.join(timeout=2)
            self._update()
            self.bar.stop()

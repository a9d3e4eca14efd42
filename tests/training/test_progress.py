"""Progress in redirected logs: time-spaced plain lines (step, loss, steps/s, ETA) during training, not one at the
end; a live bar only on a terminal."""

from __future__ import annotations

import io
import json
import re
import time

import voxray.training.loop as loop
from voxray.platform.specs.train import TrainSpec
from voxray.training.progress import INTERVAL_ENV, ProgressBar, format_line, progress_interval

from _train_helpers import make_fake_store


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert progress_interval() == 30.0
    monkeypatch.setenv(INTERVAL_ENV, "0")
    assert progress_interval() == 0.0
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    assert progress_interval() == 30.0


def test_line_format():
    p = {"phase": "train", "step": 25, "loss": 0.5, "lr": 1e-3, "it_s": 2.5}
    assert format_line(p, 100) == "train step 25/100 (25%)  loss 0.5000  lr 1.00e-03  2.50 steps/s  ETA 30s"
    assert format_line({**p, "phase": "validate", "val_done": 3, "val_total": 7}, 100) == \
        "validate at step 25: case 3/7"


def test_lines_are_spaced_by_the_interval(tmp_path):
    out = io.StringIO()
    bar = ProgressBar(tmp_path, 10, stream=out, line_interval=3600)
    assert not bar.tty
    with bar:
        for step in (1, 2, 3):
            (tmp_path / "progress.json").write_text(json.dumps(
                {"phase": "train", "step": step, "loss": 1.0, "lr": 0.1, "it_s": 1.0}))
            bar._update()
    assert out.getvalue().splitlines() == [format_line({"step": 3, "loss": 1.0, "lr": 0.1, "it_s": 1.0}, 10)]


def test_non_tty_training_run_prints_progress_lines_while_it_trains(tmp_path, monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    monkeypatch.setattr(loop, "open_store", lambda uri: make_fake_store(3, shape=(16, 16, 16)))
    real_step = loop.train_step

    def slow_step(*args, **kwargs):  # steps longer than the 0.05 s poll, as real steps are: a line per step
        time.sleep(0.15)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", slow_step)
    spec = TrainSpec(store="unused", task="brats_regions", patch=[16, 16, 16], batch_size=1, steps=12,
                     model={"name": "unet", "channels": [8, 16], "num_res_units": 1}, schedule={"name": "constant"},
                     validation={"every": 6, "folds": 3, "max_cases": 1}, checkpoint={"every": 12},
                     tracking={"mlflow": False}, augment={"enabled": False}, sampling={"loader_workers": 0})
    out = io.StringIO()
    with ProgressBar(tmp_path, spec.steps, stream=out):
        loop.train_loop({"train": spec.model_dump(mode="json"), "name": "p", "run_dir": str(tmp_path)})
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("train step")]
    steps = [int(re.match(r"train step (\d+)/12", ln).group(1)) for ln in lines]
    assert len(lines) >= 4 and steps == sorted(steps) and steps[-1] == 12, out.getvalue()
    assert all("steps/s" in ln and "ETA" in ln and "loss" in ln for ln in lines)


def test_terminal_gets_a_bar_not_lines(tmp_path):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    (tmp_path / "progress.json").write_text(json.dumps(
        {"phase": "train", "step": 5, "loss": 1.0, "lr": 0.1, "it_s": 1.0}))
    with ProgressBar(tmp_path, 10, stream=out):
        pass
    assert "train step" not in out.getvalue() and "5/10" in out.getvalue()

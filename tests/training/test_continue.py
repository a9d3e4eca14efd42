"""Continuing a run: raising `train.steps` on a finished run resumes from its last checkpoint with a new lr tail
(no jump onto the re-stretched schedule), the reason is logged, and an identical finished job is still skipped."""

from __future__ import annotations

import logging
import math

import pytest
import torch

import voxray.training.loop as loop
import voxray.training.runner as runner
from voxray.platform.specs.loader import validate_job
from voxray.platform.specs.train import ScheduleSpec
from voxray.training.checkpoint import load_state
from voxray.training.schedules import LrPlan, build_scheduler, lr_factor, restore_scheduler

from _train_helpers import make_fake_store

COSINE = ScheduleSpec(name="cosine")


def _sched(total: int, spec: ScheduleSpec = COSINE, groups: int = 1):
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(groups)]
    return build_scheduler(torch.optim.SGD(params, lr=1.0), spec, total)


def _factors(sched, steps) -> list[float]:
    return [sched.lr_lambdas[0](s) for s in steps]


def test_finished_cosine_gets_a_warm_tail_not_a_jump():
    """Cosine over 8 steps ends at 0; raised to 20 it rises to extend_peak (0.1) over 10% of the 12 new steps
    (2 steps) and decays to 0 at 20. The re-stretched schedule would have jumped to 0.65 at step 8."""
    old = _sched(8)
    for _ in range(8):
        old.optimizer.step()
        old.step()
    new = _sched(20)
    restore_scheduler(new, old.state_dict(), step=8, total_steps=20, spec=COSINE)
    f = _factors(new, range(8, 21))
    assert f[0] == pytest.approx(0.0) and f[1] == pytest.approx(0.05) and f[2] == pytest.approx(0.1)
    assert f[-1] == pytest.approx(0.0) and max(f) == pytest.approx(0.1)
    assert max(abs(a - b) for a, b in zip(f, f[1:])) <= 0.05 + 1e-9  # continuous: no step larger than the ramp
    assert lr_factor(8, COSINE, 20) == pytest.approx(0.654, abs=1e-3)  # the jump the tail avoids
    assert _factors(new, range(8)) == _factors(old, range(8))  # the steps already run keep their schedule


def test_mid_run_change_continues_from_the_current_factor():
    """Steps changed at step 4 of 8 (factor 0.5 > extend_peak): a cosine tail from 0.5 to 0 at 16, no warm-up."""
    sched = _sched(8)
    restore_scheduler(sched, sched.state_dict(), step=4, total_steps=16, spec=COSINE)
    f = _factors(sched, [4, 10, 16])
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 6 / 12)))
    assert f[2] == pytest.approx(0.0)
    const = _sched(8, ScheduleSpec(name="constant"))
    restore_scheduler(const, const.state_dict(), step=8, total_steps=12, spec=ScheduleSpec(name="constant"))
    assert _factors(const, [8, 10, 12]) == [1.0, 1.0, 1.0]


def test_plan_survives_the_scheduler_state_dict_and_freezes_groups():
    """LambdaLR saves an LrPlan's data with its state: a second resume keeps the first tail and adds another."""
    sched = _sched(8, groups=2)
    restore_scheduler(sched, sched.state_dict(), step=8, total_steps=20, spec=COSINE)
    again = _sched(30, groups=2)
    restore_scheduler(again, sched.state_dict(), step=20, total_steps=30, spec=COSINE)
    plan = again.lr_lambdas[1]
    assert isinstance(plan, LrPlan) and [t["end"] for t in plan.tails] == [20, 30]
    assert _factors(again, range(0, 21)) == _factors(sched, range(0, 21))
    assert again.lr_lambdas[0](25) > 0 and again.lr_lambdas[0](30) == pytest.approx(0.0)
    frozen = LrPlan(COSINE, 10, frozen_until=3)
    assert [frozen(s) for s in (0, 2)] == [0.0, 0.0] and frozen(3) == pytest.approx(lr_factor(3, COSINE, 10))


TRAIN = {"task": "brats_regions", "model": {"name": "unet", "channels": [8, 16], "num_res_units": 1},
         "patch": [16, 16, 16], "batch_size": 2, "optimizer": {"lr": 3e-3, "weight_decay": 0.0},
         "schedule": {"name": "cosine"}, "validation": {"mode": "none"}, "checkpoint": {"every": 4},
         "tracking": {"mlflow": False}, "augment": {"enabled": False}, "scaling": {"num_workers": 0},
         "sampling": {"loader_workers": 0, "fg_fraction": 0.5}}


def test_raising_steps_on_a_finished_run_continues_and_identical_reruns_skip(tmp_path, monkeypatch, caplog):
    store = make_fake_store(4, shape=(16, 16, 16))
    monkeypatch.setattr(runner, "open_store", lambda uri: store)
    monkeypatch.setattr(loop, "open_store", lambda uri: store)

    def job(steps: int):
        return validate_job({"kind": "train", "name": "cont", "train": {
            **TRAIN, "store": str(tmp_path / "s.zarr"), "steps": steps, "output": str(tmp_path / "runs"),
            "registry": str(tmp_path / "reg")}})

    ckpts = tmp_path / "runs" / "cont" / "checkpoints"
    first = runner.run_train(job(4))
    assert first.summary["model"].endswith("/cont/1")
    caplog.set_level(logging.INFO)
    assert runner.run_train(job(4)).summary["model"] == first.summary["model"]  # identical finished job: skipped
    assert "already finished" in caplog.text and sorted(p.name for p in ckpts.iterdir()) == ["step_0000004"]
    caplog.clear()
    more = runner.run_train(job(8))
    assert more.summary["model"].endswith("/cont/2") and "raised to 8: continuing" in caplog.text
    assert "resumed from" in caplog.text and "the run had finished" in caplog.text
    state = load_state(ckpts / "step_0000008")
    assert state["step"] == 8 and [t["end"] for t in state["scheduler"]["lr_lambdas"][0]["tails"]] == [8]
    rows = [line.split(",") for line in (tmp_path / "runs" / "cont" / "metrics.csv").read_text().splitlines()[1:]]
    lrs = {int(r[0]): float(r[2]) for r in rows if r[1] == "train/lr"}
    # lr after step s = 3e-3 · factor(s): 0 at the end of the first run, then the tail (peak 0.1 after its 1-step
    # ramp, cosine down to 0 at 8), where the re-stretched cosine would have jumped to 0.5 at step 4
    assert lrs[4] == pytest.approx(0.0) and lrs[5] == pytest.approx(3e-4) and lrs[6] == pytest.approx(2.25e-4)
    assert lrs[8] == pytest.approx(0.0)
    caplog.clear()
    assert runner.run_train(job(8)).summary["model"] == more.summary["model"]
    assert "already finished" in caplog.text

"""`make bench`'s summary: every benchmark script it runs has goals, and the per-dataset blocks of learning.json and
quality.json become the headline differences the README table shows."""

from __future__ import annotations

import run_all

from learning import RECIPES


def _rows(mean: float, key: str = "model_dice") -> dict:
    return {"rows": [{"output": "a", key: 0.1}, {"output": "mean", key: mean}]}


def test_every_benchmark_has_targets_and_a_script():
    for name in run_all.BENCHES:
        assert (run_all.HERE / f"{name}.py").exists(), name
        assert run_all.TARGETS.get(name), name


def test_learning_gain_per_layout():
    data = {"results": [{"layout": layout, **_rows(0.2 + i / 10, "gain")} for i, layout in enumerate(RECIPES)]}
    flat = run_all._flatten("learning", data)
    assert {k: flat[k] for k in run_all.TARGETS["learning"]} == {
        f"{layout}_gain": 0.2 + i / 10 for i, layout in enumerate(RECIPES)}


def test_quality_planned_minus_peers():
    data = {"results": [{"dataset": "msd_brats", "planned": _rows(0.80), "hand_written": _rows(0.82),
                         "nnunet": _rows(0.75)},
                        {"dataset": "ibsr18", "planned": _rows(0.97), "hand_written": _rows(0.96), "nnunet": None}]}
    flat = run_all._flatten("quality", data)
    assert flat["msd_brats_planned_minus_hand"] == -0.02 and flat["msd_brats_planned_minus_nnunet"] == 0.05
    assert flat["ibsr18_planned_minus_hand"] == 0.01 and "ibsr18_planned_minus_nnunet" not in flat
    goal, ok, _ = run_all.TARGETS["quality"]["msd_brats_planned_minus_hand"]
    assert not ok(flat["msd_brats_planned_minus_hand"]) and ok(flat["ibsr18_planned_minus_hand"])

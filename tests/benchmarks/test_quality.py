"""benchmarks/quality.py pieces that decide what is compared: the nnU-Net row without its venv, one validation
fold for both recipes, and the committed results' shape (baseline, hand-written and planned rows per dataset)."""

import importlib
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "quality.json"


def test_nnunet_row_without_its_venv_says_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXRAY_PEER_VENV", str(tmp_path / "nowhere"))
    import peers

    importlib.reload(peers)
    try:
        import quality

        row = quality.nnunet_arm(tmp_path, "msd_brats", tmp_path / "data", str(tmp_path / "s.zarr"), 1.0)
        assert row["status"] == "peer not installed" and "make bench-peers" in row["why"]
    finally:
        monkeypatch.delenv("VOXRAY_PEER_VENV")
        importlib.reload(peers)


def test_both_recipes_validate_on_the_same_fold(tmp_path):
    import quality

    a, b = quality._train_common(tmp_path, 10), quality._train_common(tmp_path, 99)
    assert a["validation"] == {**b["validation"], "every": 10} and a["validation"]["fold"] == 0
    assert a["scaling"] == {"num_workers": 0}


def test_committed_results_compare_every_side():
    data = json.loads(RESULTS.read_text())
    assert data["mode"] == "full" and {r["dataset"] for r in data["results"]} == {"msd_brats", "ibsr18", "ibsr18_5mm"}
    for r in data["results"]:
        hand, plan = r["hand_written"], r["planned"]
        assert {row["output"] for row in hand["rows"]} == {row["output"] for row in plan["rows"]}
        assert r["baseline"]["rows"] and "mean" in {row["output"] for row in plan["rows"]}
        assert hand["cpu_seconds"] > 0 and plan["cpu_seconds"] > 0 and r["nnunet"]["status"]
    five_mm = next(r for r in data["results"] if r["dataset"] == "ibsr18_5mm")
    assert five_mm["planned"]["resampling"] == "separate_z"

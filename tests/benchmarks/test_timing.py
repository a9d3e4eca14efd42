"""The noise discipline: interleaved rounds, medians and spreads, and refusing to write wide results."""

import json

import pytest

from _timing import REFUSED, Results, Stat, interleave, paired


def test_stat_median_and_relative_iqr():
    s = Stat([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s.median == 3.0
    assert s.iqr == (2.0, 4.0)
    assert s.spread == pytest.approx(2.0 / 3.0)
    j = s.to_json()
    assert j["min"] == 1.0 and j["max"] == 5.0 and j["n"] == 5 and j["samples"] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_interleave_rotates_order_and_drops_the_warm_up():
    calls = []
    rounds = interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=5, warmup=1)
    assert calls[:4] == ["a", "b", "b", "a"]  # the order turns every round
    assert len(calls) == 12 and len(rounds.wall["a"].samples) == 5 and len(rounds.load) == 5


def test_interleave_needs_five_repeats():
    with pytest.raises(ValueError, match="at least 5"):
        interleave({"a": lambda: None}, repeats=3)


def test_paired_ratio_cancels_a_shared_drift():
    a = Stat([2.0, 4.0, 8.0, 16.0, 32.0])  # load doubles every round; a is always 2× b
    b = Stat([1.0, 2.0, 4.0, 8.0, 16.0])
    r = paired(a, b)
    assert r.median == 2.0 and r.spread == 0.0
    assert a.spread > 0.5  # the raw timings spread widely


def test_results_refuse_a_wide_headline(tmp_path, capsys):
    res = Results("x", max_spread=0.2, out=tmp_path / "x.json")
    res.stat("steady", Stat([1.0, 1.01, 0.99, 1.0, 1.02], unit="×"), gate=True)
    res.stat("info", Stat([1.0, 5.0, 0.1, 3.0, 9.0]))  # not gated: recorded, never refused
    res.stat("noisy", Stat([1.0, 2.0, 0.5, 3.0, 1.5], unit="×"), gate=True)
    assert res.write() == REFUSED
    assert "not written: spread too wide: noisy" in capsys.readouterr().err
    data = json.loads((tmp_path / "x.json").read_text())
    assert data["noisy"].startswith("not written: spread too wide") and data["stats"]["noisy"]["refused"]
    assert data["steady"] == 1.0 and data["info"] == 3.0


def test_results_write_medians_spreads_and_load(tmp_path):
    res = Results("y", out=tmp_path / "y.json")
    res.stat("ratio", Stat([0.9, 1.0, 1.0, 1.1, 1.0], unit="×"), gate=True)
    res.value("note", "n")
    assert res.write() == 0
    data = json.loads((tmp_path / "y.json").read_text())
    assert data["ratio"] == 1.0 and data["stats"]["ratio"]["iqr"] == [1.0, 1.0]
    assert len(data["load_average"]["before"]) == 3 and data["gated"] == ["ratio"]


def test_self_measured_calls_replace_the_callers_clock():
    from _timing import Measured

    rounds = interleave({"peer": lambda: Measured(wall=2.0, cpu=0.5), "here": lambda: None}, repeats=5)
    assert rounds.wall["peer"].samples == [2.0] * 5 and rounds.cpu["peer"].median == 0.5
    assert rounds.wall["here"].median < 1.0


def test_tree_cpu_counts_a_child_process():
    import subprocess
    import sys

    from _timing import tree_cpu_seconds

    before = tree_cpu_seconds()
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    assert tree_cpu_seconds() - before > 0.05  # the reaped child's CPU time is counted

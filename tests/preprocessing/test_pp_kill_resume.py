"""A real `voxray run` killed with SIGKILL part-way leaves no half case visible; a rerun finishes only the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from _pp_helpers import job, synth
from voxray.preprocessing.runner import run_preprocess
from voxray.preprocessing.store import Store
from voxray.preprocessing.store.verify import verify_store

CASES = 6


def _descendants(pid: int) -> list[int]:
    """Pids of every process below `pid` (from /proc), children first found breadth-first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the `voxray run` process and every process it started (its embedded Ray), by pid."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(ray_session, tmp_path):
    root = synth(tmp_path / "msd_brats", cases=CASES, shape=(40, 40, 32))
    store = tmp_path / "store.zarr"
    spec = {"kind": "preprocess", "name": "pp-kill", "ray": {"num_cpus": 1, "dashboard": False,
                                                              "object_store_memory_mb": 100},
            "preprocess": {"dataset": {"layout": "msd_brats", "root": str(root)}, "store": str(store),
                           "spacing": [0.6, 0.6, 0.6], "concurrency": 1, "memory_per_case_mb": 256,
                           "fg_samples_per_class": 50, "chunk": [32, 32, 32]}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    voxray = Path(sys.executable).with_name("voxray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([str(voxray), "run", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    rows = store / "_rows"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if rows.is_dir() and len([p for p in rows.iterdir() if p.suffix == ".json"]) >= 2:
                break
            time.sleep(0.05)
    finally:
        _kill_tree(proc)
    committed = sorted(p.stem for p in rows.iterdir() if p.suffix == ".json")
    assert 2 <= len(committed) < CASES, f"kill came too late or too early: {committed}"

    # nothing half-written is visible: the killed run never committed a manifest with cases in it
    assert Store.open(str(store)).case_ids() == []
    assert not verify_store(str(store)).ok

    res = run_preprocess(job(root, str(store), spacing=[0.6, 0.6, 0.6], fg_samples_per_class=50,
                             chunk=[32, 32, 32], concurrency=1, memory_per_case_mb=256))
    assert res.ok and res.summary["cases_ok"] == CASES
    assert res.summary["cases_reused"] >= len(committed)  # finished cases were not redone
    assert res.summary["cases_converted"] == CASES - res.summary["cases_reused"]
    assert Store.open(str(store)).case_ids() == [f"BRATS_{i:03d}" for i in range(1, CASES + 1)]
    assert verify_store(str(store)).ok

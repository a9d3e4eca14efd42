"""benchmarks/gpu.py on a machine without CUDA: a clear message, exit 0, nothing written (the suite never needs a
GPU; the script itself is checked on the CPU with `--cpu-smoke`, by hand: it takes minutes)."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def _run(tmp_path, *args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def test_without_cuda_it_says_so_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run(tmp_path, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device here" in proc.stderr and "nothing measured" in proc.stderr
    assert not out.exists()


def test_cpu_smoke_never_writes_the_committed_results(tmp_path):
    proc = _run(tmp_path, "--cpu-smoke")
    assert proc.returncode == 2 and "--cpu-smoke needs --out" in proc.stderr


def test_help_lists_the_knobs(tmp_path):
    proc = _run(tmp_path, "--help")
    assert proc.returncode == 0
    assert all(flag in proc.stdout for flag in ("--repeats", "--max-spread", "--loader-workers", "--ddp-steps"))

"""Noise discipline shared by every timing benchmark (the machines are shared: other users' load comes and goes).

- `interleave` runs the compared callables in turns, one round at a time with the order rotated every round, so a
  load swing hits every side alike; at least `MIN_REPEATS` rounds after a warm-up round.
- `Stat` keeps every sample and reports the median and spread (quartiles, min–max, relative IQR).
- `paired` turns two interleaved series into per-round ratios: drift that lasts a round cancels in each ratio.
- `Results` records the load average before, during and after, and refuses every gated figure (a headline ratio)
  that spreads wider than `max_spread` (relative IQR): its value in the file becomes "not written: spread too wide"
  (the samples stay under `stats` for inspection), the benchmark says so and exits `REFUSED` instead of 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

MIN_REPEATS = 5
MAX_SPREAD = 0.25
"""Default gate: a headline ratio whose IQR is more than 25 % of its median is not a measurement."""
REFUSED = 3
"""Exit status of a benchmark that refused a figure because its spread was too wide."""
NOT_WRITTEN = "not written: spread too wide"
RESULTS = Path(__file__).resolve().parent / "results"


def _quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default rule) without importing numpy."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Stat:
    """Samples of one measured quantity (seconds, or a ratio) and their median and spread."""

    samples: list[float]
    unit: str = "s"

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Stat needs at least one sample")

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def iqr(self) -> tuple[float, float]:
        return _quantile(self.samples, 0.25), _quantile(self.samples, 0.75)

    @property
    def spread(self) -> float:
        """Relative IQR: (q3 - q1) / median (0 for a single sample)."""
        q1, q3 = self.iqr
        return (q3 - q1) / abs(self.median) if self.median else float("inf")

    def to_json(self, digits: int = 4) -> dict[str, Any]:
        q1, q3 = self.iqr
        r = lambda v: round(v, digits)  # noqa: E731
        return {"median": r(self.median), "iqr": [r(q1), r(q3)], "min": r(min(self.samples)),
                "max": r(max(self.samples)), "rel_iqr": round(self.spread, 3), "n": len(self.samples),
                "unit": self.unit, "samples": [r(v) for v in self.samples]}

    def __str__(self) -> str:
        q1, q3 = self.iqr
        return f"{self.median:.4g} {self.unit} (IQR {q1:.4g}–{q3:.4g}, ±{100 * self.spread / 2:.0f} %, n={len(self.samples)})"


def paired(a: Stat, b: Stat) -> Stat:
    """Per-round ratios a_i / b_i of two series measured in the same rounds (see `interleave`)."""
    if len(a.samples) != len(b.samples):
        raise ValueError(f"paired series differ in length: {len(a.samples)} vs {len(b.samples)}")
    return Stat([x / y for x, y in zip(a.samples, b.samples)], unit="×")


@dataclass(frozen=True)
class Measured:
    """Seconds a callable measured itself (e.g. work done in another process, without the round trip); returning
    one from a callable given to `interleave` replaces the caller-side timing of that call."""

    wall: float
    cpu: float


@dataclass
class Rounds:
    """What `interleave` measured: wall and process-CPU seconds per callable, and the load at each round."""

    wall: dict[str, Stat]
    cpu: dict[str, Stat]
    load: list[float] = field(default_factory=list)


def interleave(fns: Mapping[str, Callable[[], Any]], repeats: int = MIN_REPEATS, *, warmup: int = 1,
               min_repeats: int = MIN_REPEATS, log: Callable[[str], None] | None = None,
               on_round: Callable[[int], None] | None = None) -> Rounds:
    """Run every callable once per round for `warmup` + `repeats` rounds, rotating the order each round; only the
    rounds after the warm-up count. CPU time is this process's (threads included; not child processes) unless the
    callable returns a `Measured`. `on_round(r)` runs untimed before round r (e.g. to pick that round's inputs, the
    same for every callable)."""
    if repeats < min_repeats:
        raise ValueError(f"{repeats} repeats: at least {min_repeats} are needed for a median and a spread")
    names = list(fns)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    load = []
    last: dict[str, float] = {}
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        if on_round is not None:
            on_round(r)
        for name in order:
            c, w = time.process_time(), time.perf_counter()
            got = fns[name]()
            dw, dc = time.perf_counter() - w, time.process_time() - c
            if isinstance(got, Measured):
                dw, dc = got.wall, got.cpu
            last[name] = dw
            if r >= warmup:
                wall[name].append(dw)
                cpu[name].append(dc)
        load.append(os.getloadavg()[0])
        if log is not None:
            log(f"round {r + 1}/{warmup + repeats}{' (warm-up)' if r < warmup else ''}: "
                + ", ".join(f"{n} {last[n]:.3g} s" for n in names)
                + f" (load {load[-1]:.1f})")
    return Rounds({n: Stat(v) for n, v in wall.items()}, {n: Stat(v) for n, v in cpu.items()}, load[warmup:])


def tree_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system) of `pid` (default: this process), its reaped children and every live descendant,
    from /proc (Linux): what a Ray run costs across its raylet and worker processes. 0.0 where /proc is missing."""
    root = pid or os.getpid()
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        parents[int(entry.name)] = int(fields[1])
        # utime, stime, cutime, cstime (fields 14-17 of stat; 11-14 after the command name)
        times[int(entry.name)] = sum(int(v) for v in fields[11:15]) / tick
    total = 0.0
    for p in times:
        q = p
        while q not in (0, 1, root) and q in parents:
            q = parents[q]
        if q == root:
            total += times[p]
    return total


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


class Results:
    """One benchmark's result file: plain values, `Stat`s (median at the top level, spread under `stats`) and the
    load average; `write` refuses when a gated figure spreads more than `max_spread`."""

    def __init__(self, name: str, *, max_spread: float = MAX_SPREAD, out: Path | None = None) -> None:
        self.name, self.max_spread = name, max_spread
        self.out = out or RESULTS / f"{name}.json"
        self.data: dict[str, Any] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.gated: dict[str, float] = {}
        self.load = {"before": load_average(), "rounds": []}
        self.started = time.time()

    def value(self, key: str, value: Any) -> None:
        self.data[key] = value

    def stat(self, key: str, stat: Stat, *, gate: bool = False, digits: int = 4) -> float:
        """Record `stat` (its median under `key`, the full record under stats[key]); gated stats must not spread
        more than `max_spread`. Returns the median."""
        self.data[key] = round(stat.median, digits)
        self.stats[key] = stat.to_json(digits)
        if gate:
            self.gated[key] = stat.spread
        return stat.median

    def rounds(self, rounds: Rounds) -> None:
        self.load["rounds"] += [round(v, 2) for v in rounds.load]

    def too_wide(self) -> dict[str, float]:
        return {k: v for k, v in self.gated.items() if v > self.max_spread}

    def payload(self) -> dict[str, Any]:
        load = dict(self.load, after=load_average(), cpus=os.cpu_count())
        return {**self.data, "stats": self.stats, "gated": sorted(self.gated), "max_spread": self.max_spread,
                "load_average": load, "seconds": round(time.time() - self.started, 1)}

    def write(self) -> int:
        """Write the result file; 0, or REFUSED when a gated figure spread too wide (its value is then NOT_WRITTEN,
        never a number someone could quote)."""
        wide = self.too_wide()
        for key, spread in wide.items():
            self.data[key] = f"{NOT_WRITTEN} (relative IQR {spread:.2f} > {self.max_spread})"
            self.stats[key]["refused"] = True
        payload = self.payload()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {self.out}")
        if wide:
            why = ", ".join(f"{k} (relative IQR {v:.2f})" for k, v in wide.items())
            print(f"{self.name}: {NOT_WRITTEN}: {why} > {self.max_spread}; load average "
                  f"{payload['load_average']['before'][0]} → {payload['load_average']['after'][0]} on "
                  f"{os.cpu_count()} CPUs. Rerun on a quieter machine, with more --repeats, or with --max-spread.",
                  file=sys.stderr)
            return REFUSED
        return 0


def add_arguments(parser: argparse.ArgumentParser, repeats: int = MIN_REPEATS) -> None:
    """--repeats and --max-spread, the same on every benchmark."""
    parser.add_argument("--repeats", type=int, default=repeats,
                        help=f"interleaved rounds after the warm-up (≥ {MIN_REPEATS}; default {repeats})")
    parser.add_argument("--max-spread", type=float, default=MAX_SPREAD,
                        help=f"refuse a headline ratio whose relative IQR exceeds this "
                             f"(default {MAX_SPREAD})")

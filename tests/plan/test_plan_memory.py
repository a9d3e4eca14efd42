"""The plan's memory estimate against measured peaks of one real training step at the planned patch and batch.

Two instruments: the tensor live-bytes accounting the planner uses (here at the planned size, where the plan only
extrapolated from small probes: tolerance 10 %), and the process's resident memory high-water mark in a fresh
interpreter (an independent measure that also sees oneDNN's buffers and the allocator: tolerance 25 %).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from voxray.platform.specs.train import TrainSpec
from voxray.training.plan.memory import peak_bytes

EXTRAPOLATION_TOLERANCE = 0.10
RSS_TOLERANCE = 0.25


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A plan for a synthetic BraTS at a 0.6 GiB budget (unet, measured on this CPU): big enough that activations, not
    parameter gradients, set the step's peak — the regime a memory budget is about. A long run, so nnU-Net's SGD
    (AdamW's larger optimiser temporaries would lift the gradient phase over these activations)."""
    from voxray.preprocessing.synth import synth_dataset
    from voxray.training.plan.fingerprint import fingerprint_for
    from voxray.training.plan.recipe import LONG_RUN, PlanOptions, make_plan

    root = synth_dataset("msd_brats", tmp_path_factory.mktemp("plan-mem") / "brats", cases=3, shape=(64, 64, 48))
    fp = fingerprint_for(root, "msd_brats")
    plan = make_plan(fp, PlanOptions(model="unet", memory_gb=0.6, steps=LONG_RUN, device="cpu"), root.parent)
    return plan, fp


def _spec(plan) -> TrainSpec:
    t = plan.job["train"]
    return TrainSpec.model_validate({k: t[k] for k in ("task", "model", "patch", "batch_size", "optimizer", "loss")})


def test_plan_fits_its_budget_in_the_activation_regime(planned):
    plan, _ = planned
    d, cost = plan.details, plan.details["cost"]
    assert d["estimated_bytes"] <= d["budget_bytes"]
    assert d["estimated_bytes"] == pytest.approx(d["static_bytes"] + d["estimated_step_peak_bytes"])
    activations = cost["fixed"] + cost["per_voxel"] * d["batch_size"] * math.prod(d["patch"])
    assert activations > cost["floor"], (activations, cost["floor"])  # else this module would test the floor only


def test_extrapolation_matches_the_accounting_at_the_planned_size(planned):
    plan, fp = planned
    spec = _spec(plan)
    measured = _peak_at(spec, fp, spec.batch_size)
    estimate = plan.details["estimated_step_peak_bytes"]
    print(f"accounting at {spec.patch} batch {spec.batch_size}: measured {measured / 2**20:.1f} MiB, "
          f"extrapolated {estimate / 2**20:.1f} MiB")
    assert abs(measured - estimate) <= EXTRAPOLATION_TOLERANCE * measured, (measured, estimate)


def _peak_at(spec: TrainSpec, fp, batch: int) -> int:
    from voxray.training import tasks
    from voxray.training.losses import build_loss
    from voxray.training.loop import build_network, build_optimizer, train_step
    from voxray.training.plan.memory import _batch, _NoSchedule

    model = build_network(spec, in_channels=len(fp.channels), out_channels=tasks.num_outputs(spec.task, fp.meta))
    opt, loss = build_optimizer(model, spec), build_loss(spec.loss, spec.task)
    gen = torch.Generator().manual_seed(0)

    def step(b: int) -> None:
        x, y = _batch(spec, fp.meta, len(fp.channels), spec.patch, b, gen)
        train_step(model, [(x, y)], loss, opt, _NoSchedule(), device=torch.device("cpu"))

    step(1)
    return peak_bytes(lambda: step(batch), torch.device("cpu"))


RSS_SCRIPT = textwrap.dedent('''
    import ctypes, json, sys, torch
    from voxray.platform.specs.train import TrainSpec
    from voxray.training import tasks
    from voxray.training.losses import build_loss
    from voxray.training.loop import build_network, build_optimizer, train_step
    from voxray.training.plan.memory import _batch, _NoSchedule, static_bytes

    cfg = json.loads(sys.argv[1])
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD fixed: freed tensors go back to the OS, so RSS tracks use
    libc.mallopt(-1, 64 * 1024)  # M_TRIM_THRESHOLD

    def status(key):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

    spec, meta = TrainSpec.model_validate(cfg["spec"]), cfg["meta"]
    meta["labels"] = {int(k): v for k, v in meta["labels"].items()}
    model = build_network(spec, in_channels=cfg["channels"], out_channels=tasks.num_outputs(spec.task, meta))
    opt, loss = build_optimizer(model, spec), build_loss(spec.loss, spec.task)
    gen = torch.Generator().manual_seed(0)

    def step(batch, patch):
        x, y = _batch(spec, meta, cfg["channels"], patch, batch, gen)
        train_step(model, [(x, y)], loss, opt, _NoSchedule(), device=torch.device("cpu"))

    step(1, [d * 2 for d in cfg["divisors"]])  # optimiser state exists, as in training
    libc.malloc_trim(0)
    open("/proc/self/clear_refs", "w").write("5")  # reset the RSS high-water mark to now
    before = status("VmRSS:")
    step(spec.batch_size, spec.patch)
    print(json.dumps({"step_peak": status("VmHWM:") - before, "static": static_bytes(model, opt)}))
''')


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc (VmHWM reset)")
def test_resident_memory_of_a_real_step_matches_the_plan(planned):
    """An independent measurement: peak RSS growth of one step at the planned patch and batch, fresh process."""
    plan, fp = planned
    spec = _spec(plan)
    from voxray.training.plan.search import unet_for

    cfg = {"spec": spec.model_dump(mode="json"), "meta": {k: v for k, v in fp.meta.items()},
           "channels": len(fp.channels), "divisors": list(unet_for(spec.patch, plan.details["target_spacing_zyx"])
                                                          .divisors)}
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, json.dumps(cfg, default=str)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["static"] == plan.details["static_bytes"]
    estimate = plan.details["estimated_step_peak_bytes"]
    print(f"RSS growth of one step at {spec.patch} batch {spec.batch_size}: {got['step_peak'] / 2**20:.1f} MiB, "
          f"plan {estimate / 2**20:.1f} MiB")
    assert abs(got["step_peak"] - estimate) <= RSS_TOLERANCE * got["step_peak"], (got, estimate)

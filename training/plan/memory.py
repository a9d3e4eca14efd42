"""Measured cost of one training step of the real network: memory and time, extrapolated from small probes.

Memory is what the step allocates on top of the parameters and optimiser state: on CUDA `max_memory_allocated`,
on CPU the live bytes of every tensor the step creates (a `TorchDispatchMode` sees each op's outputs, including the
backward's, and a finaliser on each storage sees it freed) — the same quantity the CUDA caching allocator reports,
without the CPU allocator's caching and oneDNN's internals that make process RSS unrepeatable.
The peak is the larger of two phases: the end of the forward (activations kept for backward; grows linearly with
batch × voxels, and through the origin for a fully convolutional net) and the end of the backward (parameter
gradients and optimiser temporaries; a constant). Probes double the batch at a small patch until the peak doubles
too (the activation phase dominates), fit the line there, and keep the constant; the planned size is extrapolated.
The network, loss, optimiser and `train_step` are the training loop's own.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from voxray.platform.specs.train import TrainSpec

log = logging.getLogger(__name__)

__all__ = ["StepCost", "measure_step", "time_step", "peak_bytes", "static_bytes"]

MiB = 2**20
TIMED_STEPS = 3


@dataclass(frozen=True)
class StepCost:
    """Memory and time of one optimiser step of one network, fitted from probes; bytes and seconds."""

    static: int
    """Parameters + optimiser state (held between steps)."""
    floor: float
    """Peak of the backward-end phase (parameter gradients, optimiser temporaries): independent of the patch."""
    fixed: float
    """Intercept of the activation phase's line."""
    per_voxel: float
    """Slope of the activation phase: bytes per sample-voxel (activations kept for backward, their gradients)."""
    seconds_per_voxel: float
    """Step time per sample-voxel on `device` at the largest probe (compute scales with voxels)."""
    device: str
    probes: tuple[tuple[int, int, float], ...]
    """(batch, peak bytes, seconds) per probe at `probe_patch`; the last probe's seconds are one more, unaccounted
    step at its shape (the first one pays for oneDNN/cuDNN setup). A rough guide for the search's time rule only:
    `time_step` times the planned size itself."""
    probe_patch: tuple[int, ...]

    def step_peak(self, patch: Sequence[int], batch: int) -> float:
        """Bytes the step allocates at its peak, above the static part."""
        return max(self.floor, self.fixed + self.per_voxel * batch * math.prod(patch))

    def memory(self, patch: Sequence[int], batch: int) -> float:
        """Total bytes while training at (patch, batch): static + step peak."""
        return self.static + self.step_peak(patch, batch)

    def seconds(self, patch: Sequence[int], batch: int) -> float:
        return self.seconds_per_voxel * batch * math.prod(patch)

    def to_dict(self) -> dict:
        return asdict(self)


def static_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of parameters plus every tensor in the optimiser state (AdamW: 2 per parameter, SGD momentum: 1)."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    for state in optimizer.state.values():
        n += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v) and v.dim() > 0)
    return int(n)


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created inside the mode that are still alive; keeps the maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _freed(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self._sizes:
                    self._sizes[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._freed, key)
        return out


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated while `fn` runs, above what was allocated when it started."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    mode = LiveBytes()
    with mode:
        fn()
    return int(mode.peak)


def _clock(device: torch.device) -> tuple[Callable[[], float], float]:
    """Wall time on CUDA; on a CPU the process's CPU time ÷ torch threads (what an idle machine would take)."""
    if device.type == "cuda":
        return time.perf_counter, 1.0
    return time.process_time, 1.0 / torch.get_num_threads()


class _NoSchedule:
    def step(self) -> None:
        pass


def _batch(spec: TrainSpec, meta: dict, in_ch: int, patch: Sequence[int], batch: int, gen: torch.Generator):
    from voxray.training import tasks

    values = tasks.label_values(meta) or [0, 1]
    x = torch.randn(batch, in_ch, *patch, generator=gen)
    lab = torch.tensor(values)[torch.randint(len(values), (batch, *patch), generator=gen)]
    y = torch.stack([tasks.encode_target(lab[b], spec.task, meta) for b in range(batch)])
    return x, y


def measure_step(spec: TrainSpec, meta: dict, in_channels: int, probe_patch: Sequence[int],
                 device: str | torch.device = "cpu", max_voxels: int = 2**22) -> StepCost:
    """Build `spec`'s network at `probe_patch` and run the loop's `train_step` at batch 1 and 2, and when the peak
    did not double (gradients dominate) at larger batches, doubling while batch × voxels ≤ `max_voxels`; fit the line
    through the last two probes; one more step at the last probe's batch gives a per-voxel time for the search.

    The probe network is built for `probe_patch` (a Factorizer's positional embedding is sized by it).
    """
    from voxray.training import tasks
    from voxray.training.losses import build_loss
    from voxray.training.loop import build_network, build_optimizer, train_step

    device = torch.device(device)
    probe_patch = tuple(int(p) for p in probe_patch)
    probe = spec.model_copy(update={"patch": list(probe_patch)})
    torch.manual_seed(0)
    model = build_network(probe, in_channels=in_channels, out_channels=tasks.num_outputs(spec.task, meta)).to(device)
    optimizer = build_optimizer(model, probe)
    loss_fn = build_loss(spec.loss, spec.task)
    gen = torch.Generator().manual_seed(0)

    def step(batch: int) -> None:
        x, y = _batch(spec, meta, in_channels, probe_patch, batch, gen)
        train_step(model, [(x.to(device), y.to(device))], loss_fn, optimizer, _NoSchedule(), device=device,
                   precision=spec.precision, grad_clip=spec.grad_clip)

    step(1)  # optimiser state and allocator warm-up, outside the measurement
    voxels = math.prod(probe_patch)
    batches: list[int] = [1, 2]
    probes: list[tuple[int, int, float]] = []
    while batches:
        batch = batches.pop(0)
        start = time.perf_counter()
        peak = peak_bytes(lambda: step(batch), device)
        probes.append((batch, peak, time.perf_counter() - start))
        if batches or peak >= 1.8 * probes[-2][1]:
            continue
        # gradients still dominate the peak: jump to ~0.5 M sample-voxels, then keep doubling (≤ max_voxels)
        nxt = max(2 * batch, 2 ** math.ceil(math.log2(2**19 / voxels))) if len(probes) == 2 else 2 * batch
        if nxt * voxels <= max_voxels:
            batches = [nxt // 2, nxt] if nxt // 2 > batch else [nxt]
    clock, scale = _clock(device)
    start = clock()  # the probe paid for first-use setup at its shape (oneDNN primitives): time again
    step(probes[-1][0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    probes[-1] = (*probes[-1][:2], (clock() - start) * scale)
    (b0, p0, _), (b1, p1, s1) = probes[-2], probes[-1]
    per_voxel = max(0.0, (p1 - p0) / ((b1 - b0) * voxels))
    cost = StepCost(static=static_bytes(model, optimizer), floor=float(probes[0][1]),
                    fixed=float(p1 - per_voxel * b1 * voxels), per_voxel=per_voxel,
                    seconds_per_voxel=s1 / (b1 * voxels), device=device.type, probes=tuple(probes),
                    probe_patch=probe_patch)
    log.info("plan probe %s %s: %s; %.0f B per voxel", spec.model.name, probe_patch,
             ", ".join(f"batch {b}: {p / MiB:.1f} MiB {s:.2f} s" for b, p, s in probes), per_voxel)
    return cost


def time_step(spec: TrainSpec, meta: dict, in_channels: int, device: str | torch.device = "cpu",
              repeats: int = TIMED_STEPS) -> float:
    """Seconds of one `train_step` at `spec.patch` × `spec.batch_size`: the best of `repeats` after a warm-up step,
    batches made beforehand (the loader prepares them in background threads during training).

    On a CPU the step is timed by the process's CPU time divided by torch's threads — what the step costs an idle
    machine, which other processes on a shared one do not inflate (wall time here varied 10× between runs).
    Per-voxel times from the probes do not transfer across sizes on a CPU (cache effects: 2–4× here), so the
    planned size itself is timed."""
    from voxray.training import tasks
    from voxray.training.losses import build_loss
    from voxray.training.loop import build_network, build_optimizer, train_step

    device = torch.device(device)
    torch.manual_seed(0)
    model = build_network(spec, in_channels=in_channels, out_channels=tasks.num_outputs(spec.task, meta)).to(device)
    optimizer, loss_fn = build_optimizer(model, spec), build_loss(spec.loss, spec.task)
    gen = torch.Generator().manual_seed(0)
    batches = [_batch(spec, meta, in_channels, spec.patch, spec.batch_size, gen) for _ in range(repeats + 1)]
    clock, scale = _clock(device)
    times = []
    for x, y in batches:
        start = clock()
        train_step(model, [(x.to(device), y.to(device))], loss_fn, optimizer, _NoSchedule(), device=device,
                   precision=spec.precision, grad_clip=spec.grad_clip)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((clock() - start) * scale)
    return min(times[1:])

"""`train.init`: start a run from existing weights (fine-tuning), with an explicit, logged mismatch policy.

Strict by default: every weight of the network must come from the source with the same name and shape. The
exceptions are the network's input layer(s) and output head(s), found by building the architecture twice with other
channel counts (the keys whose shapes follow `in_channels` / `out_channels`):

- input channels are matched by name (case-insensitive) or `channel_map`; a channel the source lacks gets the mean
  of the source's channel weights or zeros (`new_channels`), source channels the job does not use are dropped;
- output channels are matched by name when both sides are known (a registry card: BraTS regions ET/TC/WT keep their
  head even though BraTS 2023 numbers its labels differently); otherwise the head is kept when its shape matches, or
  left at its fresh random initialisation with `new_head: true` (the keys are logged).

`freeze_encoder_steps` puts the encoder's parameters into their own optimizer group whose learning-rate factor is 0
for those steps (`training.schedules.LrPlan`); DDP still sees every parameter, so ranks stay in step.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from voxray.platform.errors import SpecError
from voxray.platform.specs.train import TrainSpec
from voxray.training import tasks
from voxray.training.init_source import Source, load_source

log = logging.getLogger(__name__)

__all__ = ["init_weights", "check_init", "match_weights", "param_groups", "io_keys", "source_outputs"]

_PROBE_IN, _PROBE_OUT = (5, 7), (6, 11)
"""Channel counts of the two probe builds: unusual values, so no hidden width changes with them."""


def _build(spec: TrainSpec, in_ch: int, out_ch: int) -> nn.Module:
    from voxray.training.loop import build_network

    try:
        with torch.device("meta"):  # shapes only: no memory, no init cost
            return build_network(spec, in_channels=in_ch, out_channels=out_ch)
    except Exception:  # noqa: BLE001  (a builder that calls .item() cannot run on meta)
        return build_network(spec, in_channels=in_ch, out_channels=out_ch)


def io_keys(spec: TrainSpec) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """({key: dims that follow in_channels}, {key: dims that follow out_channels}) of the network of `spec`."""
    a = {k: tuple(v.shape) for k, v in _build(spec, _PROBE_IN[0], _PROBE_OUT[0]).state_dict().items()}
    b = {k: tuple(v.shape) for k, v in _build(spec, _PROBE_IN[1], _PROBE_OUT[1]).state_dict().items()}
    inputs: dict[str, list[int]] = {}
    heads: dict[str, list[int]] = {}
    for key, shape in a.items():
        if key not in b or shape == b[key] or len(shape) != len(b[key]):
            continue
        dims = [d for d, (x, y) in enumerate(zip(shape, b[key])) if x != y]
        if all((shape[d], b[key][d]) == _PROBE_OUT for d in dims):
            heads[key] = dims
        elif all((shape[d], b[key][d]) == _PROBE_IN for d in dims):
            inputs[key] = dims
        else:
            heads[key] = dims  # depends on both counts: treated as part of the head
    return inputs, heads


def source_outputs(card: Mapping[str, Any] | None) -> list[str] | None:
    """Output names of a registry card (task + label map), or None when the source has no card."""
    if card is None:
        return None
    meta = {"labels": card.get("labels") or {}, "regions": card.get("regions"),
            "label_encoding": card.get("label_encoding", "index")}
    try:
        return tasks.output_names(card["task"], meta)
    except ValueError:
        return None


def _index(wanted: list[str], have: list[str], mapping: Mapping[str, str] | None = None) -> list[int | None]:
    """Position in `have` of each wanted name (case-insensitive, after `mapping`), None where absent."""
    lower = [h.lower() for h in have]
    remap = {k.lower(): v for k, v in (mapping or {}).items()}
    out: list[int | None] = []
    for name in wanted:
        target = remap.get(name.lower(), name).lower()
        out.append(lower.index(target) if target in lower else None)
    return out


def _gather(t: torch.Tensor, dims: list[int], index: list[int | None], fill: str) -> torch.Tensor:
    """`t` with each of `dims` re-indexed by `index`; a None takes the mean over that dim (or zeros)."""
    for d in dims:
        parts = []
        for i in index:
            if i is not None:
                parts.append(t.narrow(d, i, 1))
            elif fill == "mean":
                parts.append(t.mean(dim=d, keepdim=True))
            else:
                parts.append(torch.zeros_like(t.narrow(d, 0, 1)))
        t = torch.cat(parts, dim=d)
    return t


def _channel_plan(init, source: Source, channels: list[str]) -> tuple[list[int | None], list[str], list[str]]:
    """(source index per job channel, notes, problems) for the input layer."""
    names = (source.card or {}).get("channels") or init.source_channels
    notes: list[str] = []
    if names is None:
        return list(range(len(channels))), notes, []  # counts checked against the tensors by the caller
    bad = [f"channel_map {k!r} → {v!r}: {v!r} is not a source channel ({list(names)})"
           for k, v in init.channel_map.items() if v.lower() not in [n.lower() for n in names]]
    index = _index(channels, list(names), init.channel_map)
    for ch, i in zip(channels, index):
        if i is None:
            notes.append(f"input channel {ch!r}: not in the source {list(names)}; its first-layer weights are the "
                         f"{init.new_channels} of the source's channels (new_channels: {init.new_channels})")
        elif names[i].lower() != ch.lower():
            notes.append(f"input channel {ch!r}: copies the weights of source channel {names[i]!r} (channel_map)")
    unused = [n for j, n in enumerate(names) if j not in index]
    if unused:
        notes.append(f"source input channels {unused} are not used by this job: their weights are dropped")
    if init.new_channels == "error" and None in index:
        missing = [c for c, i in zip(channels, index) if i is None]
        bad.append(f"input channels {missing} are not in the source {list(names)} (set new_channels: mean or zero, "
                   f"or channel_map)")
    return index, notes, bad


def match_weights(model_state: Mapping[str, torch.Tensor], source: Source, spec: TrainSpec, *,
                  channels: list[str], outputs: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str]]:
    """(weights to load, policy record for the lineage, problems) of `source` for the network of `spec`."""
    init = spec.init
    inputs, heads = io_keys(spec)
    record: dict[str, Any] = {}
    problems: list[str] = []
    load: dict[str, torch.Tensor] = {}
    index, notes, bad = _channel_plan(init, source, channels)
    problems += bad
    src_out = source_outputs(source.card)
    out_index = None if src_out is None else _index(outputs, src_out, init.output_map)
    head_ok = out_index is not None and None not in out_index and (
        tasks.activation(source.card["task"]) == tasks.activation(spec.task))
    if out_index is None:  # no names: the head is kept when its shape matches
        head_ok = all(k in source.state and source.state[k].shape == model_state[k].shape for k in heads)
        out_index = list(range(len(outputs)))
        if head_ok and heads:
            notes.append("output head kept: the source has no card, its output count matches")
    if not head_ok:
        if init.new_head:
            record["new_head"] = sorted(heads)
            notes.append(f"outputs {outputs} differ from the source's {src_out or '(unnamed)'}: output head "
                         f"re-initialised (new_head: true): {', '.join(sorted(heads))}")
        else:
            problems.append(f"the outputs {outputs} differ from the source's {src_out or '(count differs)'} "
                            f"(set new_head: true to re-initialise the output head)")
    elif src_out is not None and src_out != outputs:
        picked = [src_out[i] for i in out_index]
        notes.append(f"output head rows selected by name: {outputs} from the source's {picked}"
                     + (" (output_map)" if init.output_map else ""))
    for key, target in model_state.items():
        if key in heads and not head_ok:
            continue
        if key not in source.state:
            problems.append(f"{key}: missing from the source")
            continue
        value = source.state[key]
        if key in inputs and init.source_channels is None and (source.card or {}).get("channels") is None \
                and value.shape != target.shape:
            problems.append(f"{key}: the source has {value.shape[inputs[key][0]]} input channels, the job "
                            f"{len(channels)}; name them with source_channels")
            continue
        if key in inputs:
            value = _gather(value, inputs[key], index, init.new_channels)
        elif key in heads:
            value = _gather(value, heads[key], out_index, "zero")
        if value.shape != target.shape:
            problems.append(f"{key}: source {tuple(value.shape)} vs model {tuple(target.shape)}")
            continue
        load[key] = value.to(target.dtype)
    problems += [f"{k}: not a weight of this network" for k in source.state if k not in model_state]
    if notes:
        record["notes"] = notes
    return load, record, problems


def _raise_or_log(problems: list[str], spec: TrainSpec, source: Source) -> None:
    if not problems:
        return
    if spec.init.strict:
        shown = problems[:8] + ([f"… and {len(problems) - 8} more"] if len(problems) > 8 else [])
        parent = (source.card or {}).get("model")
        hint = ("train.model, train.patch and the channels must build the source's architecture"
                + (f" (its card: model {parent}, patch {source.card.get('patch')})" if parent else "")
                + "; or set train.init.strict: false to load only what matches")
        raise SpecError("", [f"train.init: {p}" for p in shown], hint=hint)
    log.warning("train.init (strict: false): %d weights not loaded, left at their random initialisation: %s",
                len(problems), "; ".join(problems[:20]))


def _job_io(env: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    spec, store = env["spec"], env["store"]
    chans = env.get("chans")
    channels = [store.channels[i] for i in chans] if chans is not None else list(store.channels)
    return channels, tasks.output_names(spec.task, env["meta"])


def init_weights(env: Mapping[str, Any]) -> dict[str, Any] | None:
    """Load `train.init` into the (freshly built) network of a run that has no checkpoint; returns the lineage the
    model card records, None for a run from scratch. `env` is the loop's: spec, model, store, meta, chans, rank."""
    spec = env["spec"]
    if spec.init is None:
        return None
    from voxray.training.checkpoint import unwrap

    model = unwrap(env["model"])
    source = load_source(spec.init, spec.registry)
    channels, outputs = _job_io(env)
    load, record, problems = match_weights(model.state_dict(), source, spec, channels=channels, outputs=outputs)
    _raise_or_log(problems, spec, source)
    with torch.no_grad():
        state = model.state_dict()
        for key, value in load.items():
            state[key].copy_(value)
    lineage = {**source.lineage, **record, "loaded": len(load), "of": len(state)}
    if spec.init.freeze_encoder_steps:
        lineage["freeze_encoder_steps"] = spec.init.freeze_encoder_steps
    if env.get("rank", 0) == 0:
        parent = (f"{lineage.get('name')} v{lineage.get('version')}" if lineage["source"] == "registry"
                  else f"{lineage['source']} {lineage['path']} (sha256 {lineage['sha256'][:12]}…)")
        log.info("train.init: %d of %d weights from %s", len(load), len(state), parent)
        for note in record.get("notes", []):
            log.info("train.init: %s", note)
        if spec.init.freeze_encoder_steps:
            log.info("train.init: encoder frozen (lr 0) for the first %d steps", spec.init.freeze_encoder_steps)
    return lineage


def check_init(spec: TrainSpec, store: Any) -> None:
    """Preflight (before Ray starts): the source exists and fits the network under the declared policy."""
    if spec.init is None:
        return
    from voxray.training.data import channel_indices

    meta = store.metadata()
    chans = channel_indices(store.channels, spec.channels)
    env = {"spec": spec, "store": store, "meta": meta, "chans": chans}
    channels, outputs = _job_io(env)
    model = _build(spec, len(channels), len(outputs))
    source = load_source(spec.init, spec.registry)
    _, _, problems = match_weights(model.state_dict(), source, spec, channels=channels, outputs=outputs)
    if spec.init.strict:
        _raise_or_log(problems, spec, source)
    if spec.init.freeze_encoder_steps:
        encoder_parameters(model, spec)


def encoder_parameters(model: nn.Module, spec: TrainSpec) -> set[str]:
    """Names of the encoder's parameters (the model zoo's `encoder` pattern); an error when it has none."""
    from voxray.training.models import encoder_pattern

    pattern = encoder_pattern(spec.model.name)
    names = {n for n, _ in model.named_parameters() if pattern and re.match(pattern, n)}
    if not names:
        raise SpecError("", [f"train.init.freeze_encoder_steps: model {spec.model.name!r} declares no encoder"])
    return names


def param_groups(model: nn.Module, spec: TrainSpec) -> list[dict[str, Any]] | Iterable[nn.Parameter]:
    """The optimizer's parameters: all of them, or [encoder (frozen_until N), the rest] when freezing."""
    from voxray.training.checkpoint import unwrap

    net = unwrap(model)
    steps = spec.init.freeze_encoder_steps if spec.init is not None else 0
    if not steps:
        return list(net.parameters())
    encoder = encoder_parameters(net, spec)
    named = list(net.named_parameters())
    return [{"params": [p for n, p in named if n in encoder], "frozen_until": steps},
            {"params": [p for n, p in named if n not in encoder]}]

"""Model ensembles: a registry entry whose card lists member models, and the rule that combines their predictions.

An ensemble version folder holds a card only (no weights): `ensemble: {members: [{name, version}], combine:
mean_probabilities}` plus everything a consumer needs that the members share (task, channels, labels, preprocess,
patch, inference defaults). Members live in the same registry root, named `<name>/<version>`, so a registry moves
or syncs as one folder. Fold ensembles come from `train.ensemble: folds` (`run_fold_ensemble`: one model per fold
of `train.validation.folds`, each validating on its own fold) or `voxray export --ensemble NAME MODEL...`.

Prediction (`predict.Predictor`, the one path for CLI and serving) runs every member through the same window engine
volume by volume and `combine`s them: the ensemble's class probabilities are the mean of the members' softmax /
sigmoid probabilities, handed on as logits whose activation gives that mean back (log p for softmax, logit p for
sigmoid), so decoding, postprocessing and uncertainty are unchanged. The variance map is the total variance across
members × TTA flips (law of total variance: mean within-member TTA variance + variance of the member means).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from voxray.platform.paths import is_remote, join
from voxray.training import tasks

log = logging.getLogger(__name__)

__all__ = ["SHARED_KEYS", "is_ensemble", "member_dirs", "ensemble_card", "export_ensemble", "combine",
           "run_fold_ensemble", "fold_member_name", "load_networks"]

SHARED_KEYS = ("task", "channels", "in_channels", "out_channels", "spatial_dims", "patch", "labels", "label_encoding",
               "regions", "slice_axis", "preprocess", "restrict_to_nonzero")
"""Card keys every member must agree on: one input decoding, one output meaning."""
_EPS = 1e-7


def is_ensemble(card: Mapping[str, Any]) -> bool:
    return bool(card.get("ensemble"))


def fold_member_name(name: str, fold: int) -> str:
    """Registry name (and run dir) of one fold's model: `<name>-fold<k>`."""
    return f"{name}-fold{fold}"


def _under(root: str | Path, *parts: str) -> str | Path:
    """`root/parts…`: a Path for local registries, a URI string for object stores."""
    return join(root, *parts) if isinstance(root, str) and is_remote(root) else Path(root).joinpath(*parts)


def _registry_root(vdir: str | Path) -> str | Path:
    """`<root>` of a version folder `<root>/<name>/<version>`."""
    return str(vdir).rstrip("/").rsplit("/", 2)[0] if isinstance(vdir, str) else Path(vdir).parent.parent


def member_dirs(vdir: str | Path, card: Mapping[str, Any]) -> list[str | Path]:
    """Version folders of an ensemble's members: `<registry root>/<name>/<version>` beside the ensemble's own name."""
    root = _registry_root(vdir)
    return [_under(root, str(m["name"]), str(m["version"])) for m in (card.get("ensemble") or {}).get("members") or []]


def ensemble_card(cards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The card of an ensemble of `cards` (each a member's full card, with name and version): the shared keys,
    the first member's architecture and inference defaults, the members' mean validation metrics (cross-validation
    when they are folds) and, per output, the largest-component postprocessing all members chose."""
    from voxray.training.registry import InvalidCard

    if len(cards) < 2:
        raise InvalidCard(f"an ensemble needs at least 2 member models, got {len(cards)}")
    first = cards[0]
    for card in cards[1:]:
        for key in SHARED_KEYS:
            if card.get(key) != first.get(key):
                raise InvalidCard(f"ensemble members disagree on {key}: {first.get('name')} v{first.get('version')} "
                                  f"has {first.get(key)!r}, {card.get('name')} v{card.get('version')} has "
                                  f"{card.get(key)!r}")
        if card.get("ensemble"):
            raise InvalidCard(f"{card.get('name')} v{card.get('version')} is an ensemble itself; list its members")
    metrics = [c.get("metrics") or {} for c in cards]
    common = [k for k in metrics[0] if all(isinstance(m.get(k), (int, float)) for m in metrics)]
    kept = [set((c.get("postprocess") or {}).get("largest_component") or ()) for c in cards]
    lcc = sorted(set.intersection(*kept))
    members = [{"name": c["name"], "version": int(c["version"]), "metrics": c.get("metrics") or {}} for c in cards]
    return {**{k: first.get(k) for k in SHARED_KEYS}, "model": first["model"],
            "inference": dict(first.get("inference") or {}),
            "metrics": {k: sum(float(m[k]) for m in metrics) / len(metrics) for k in common},
            "postprocess": {"largest_component": lcc} if lcc else None,
            "ensemble": {"members": members, "combine": "mean_probabilities"},
            "source": {"ensemble_of": [f"{c['name']}/{c['version']}" for c in cards]}, "lineage": None}


def export_ensemble(members: Sequence[str | Path], name: str, registry_root: str | Path | None = None) -> Path | str:
    """Write the next version of `<registry_root>/<name>` as an ensemble of the registry entries `members`
    (`<registry>/<name>[/<version>]`); the registry defaults to the members' one, which must hold them all. A rerun
    with the same members returns the latest version instead of adding an identical one."""
    from voxray.training.registry import InvalidCard, export_model, list_versions, read_card, resolve_version

    vdirs = [resolve_version(m) for m in members]
    root = registry_root if registry_root is not None else _registry_root(vdirs[0])
    outside = [str(v) for v in vdirs if str(_registry_root(v)).rstrip("/") != str(root).rstrip("/")
               and not (isinstance(v, Path) and Path(_registry_root(v)).resolve() == Path(root).resolve())]
    if outside:
        raise InvalidCard(f"ensemble members must live in the registry the ensemble is written to ({root}): "
                          f"{outside} do not")
    card = ensemble_card([read_card(v) for v in vdirs])
    latest = list_versions(_under(root, name))
    if latest:
        prev_dir = _under(root, name, str(latest[-1]))
        prev = (read_card(prev_dir).get("ensemble") or {}).get("members") or []
        if [(m["name"], m["version"]) for m in prev] == [(m["name"], m["version"]) for m in card["ensemble"]["members"]]:
            return prev_dir
    return export_model(None, card, root, name)


def _logits(probs: torch.Tensor, task: str) -> torch.Tensor:
    """Logits whose activation is `probs`: log p for softmax (softmax(log p) = p when p sums to 1), logit p for
    sigmoid."""
    p = probs.clamp(_EPS, 1.0 - _EPS)
    if tasks.activation(task) == "softmax":
        return p.log()
    return p.log() - (-p).log1p()


def combine(members: Sequence[tuple[torch.Tensor, torch.Tensor | None]], task: str,
            variance: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits (K, *S), variance (K, *S) or None) of an ensemble from its members' (logits, TTA variance or None):
    mean probabilities, and with `variance` the total variance across members and their TTA flips."""
    probs = [tasks.activate(logits.float(), task) for logits, _ in members]
    mean = torch.stack(probs).mean(0)
    if not variance:
        return _logits(mean, task), None
    between = torch.stack([(p - mean) ** 2 for p in probs]).mean(0)
    within = [v.float() for _, v in members if v is not None]
    total = between + (torch.stack(within).mean(0) if len(within) == len(members) else 0.0)
    return _logits(mean, task), total


def run_fold_ensemble(job: Any, run_one: Callable[[Any], Any]) -> Any:
    """`train.ensemble: folds`: train fold 0..k-1 of `train.validation.folds` as jobs `<name>-fold<k>` (each its
    own run dir and registry entry, validating on its fold; each resumes or is skipped like any train job), then
    export the ensemble `<name>` listing them. Returns a StageResult with per-fold and mean validation metrics."""
    from voxray.platform.stages import StageResult

    spec = job.train
    results, models, rows = [], [], []
    for fold in range(spec.validation.folds):
        validation = spec.validation.model_copy(update={"fold": fold})
        sub = job.model_copy(update={"name": fold_member_name(job.name, fold),
                                     "train": spec.model_copy(update={"ensemble": "none", "validation": validation})})
        log.info("fold ensemble %s: training fold %d of %d", job.name, fold + 1, spec.validation.folds)
        res = run_one(sub)
        results.append(res)
        models.append(res.summary.get("model"))
        rows.append({"fold": fold, **{k: round(float(v), 4) for k, v in res.summary.items()
                                      if k.startswith("val/") and isinstance(v, (int, float))}})
    val_keys = [k for k in rows[0] if k != "fold" and all(k in r for r in rows)]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in val_keys}
    summary: dict[str, Any] = {"folds": len(rows), "members": [str(m) for m in models if m], **mean}
    if spec.export and all(models):
        summary = {"model": str(export_ensemble(models, job.name, spec.registry)), **summary}
    tables = [("fold ensemble: validation per fold (each fold's own held-out cases)",
               rows + [{"fold": "mean", **{k: round(v, 4) for k, v in mean.items()}}])]
    return StageResult("train", summary=summary, tables=tables)


def load_networks(path: str | Path, settings: Any) -> tuple[list[torch.nn.Module], dict[str, Any]]:
    """(networks, card) of a registry entry for `settings` (`predict_settings.InferenceSettings`): the one model,
    or an ensemble's members in card order; torch modules on the settings' device, or onnxruntime sessions
    (`settings.backend`). Each member is checked against the settings' window as if predicted alone."""
    from voxray.training.predict_settings import resolve_settings
    from voxray.training.registry import load_model, read_card, resolve_version

    vdir = resolve_version(path)
    card = read_card(vdir)
    dirs = member_dirs(vdir, card) if is_ensemble(card) else [vdir]
    nets = []
    for d in dirs:
        member = card if d is vdir else read_card(d)
        if d is not vdir:  # the member's own rules (fixed-size models) on the ensemble's window
            resolve_settings(member, window=list(settings.window), device="cpu")
        if settings.backend == "onnxruntime":
            from voxray.training.onnx_export import load_onnx

            nets.append(load_onnx(d, member, settings.window, settings.device))
        else:
            nets.append(load_model(d, settings.device)[0])
    return nets, card

"""Search space: YAML domains over dotted train-spec paths → Ray Tune domains, and sampled values → a validated
TrainSpec.

Every trial's train spec is the base `train` section with the sampled values set at their dotted paths, then
re-validated by `TrainSpec`, so a bad path or value is a `SpecError` naming `tune.space[...]` before any trial
starts (`check_space` probes every choice/grid value, both bounds of ranges and a few full samples).

Choice/grid values that are not scalars (channel subsets, model dicts) are shown to Tune and Optuna as short
YAML labels (`[FLAIR]`, `{name: unet_depth, depth: 2}`): Optuna's categorical distribution only takes scalars, and
labels keep the results table readable. `SearchSpace.decode` maps them back.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from voxray.platform.errors import SpecError
from voxray.platform.specs.loader import format_errors
from voxray.platform.specs.train import TrainSpec

PREFIX = "train."
_SCALARS = (type(None), bool, int, float, str)


def label(value: Any) -> Any:
    """Scalars as they are; lists/dicts as one-line YAML (`[FLAIR, T1w]`), the form Tune and Optuna can hold."""
    if isinstance(value, _SCALARS):
        return value
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()


@dataclass(frozen=True)
class Domain:
    """One `path: {kind: args}` entry of `tune.space`."""

    path: str
    kind: str
    args: tuple

    @property
    def categorical(self) -> bool:
        return self.kind in ("choice", "grid")

    def labels(self) -> list[Any]:
        return [label(v) for v in self.args]

    def to_tune(self) -> Any:
        """The Ray Tune domain (a `grid_search` dict for grid)."""
        from ray import tune

        lo_hi = self.args[:2]
        if self.kind == "uniform":
            return tune.uniform(*lo_hi)
        if self.kind == "loguniform":
            return tune.loguniform(*lo_hi)
        if self.kind == "randint":
            return tune.randint(*lo_hi)
        if self.kind == "choice":
            return tune.choice(self.labels())
        return tune.grid_search(self.labels())

    def decode(self, sampled: Any) -> Any:
        """The spec value for a sampled Tune value (labels back to lists/dicts)."""
        if not self.categorical:
            return int(sampled) if self.kind == "randint" else float(sampled)
        for lab, value in zip(self.labels(), self.args):
            if lab == sampled:
                return value
        raise ValueError(f"{self.path}: sampled {sampled!r} is not one of {self.labels()}")

    def probes(self) -> list[Any]:
        """Values checked one by one before the sweep: every category, or both ends of a range."""
        if self.categorical:
            return list(self.args)
        lo, hi = self.args[:2]
        if self.kind == "randint":
            return [int(lo), int(hi) - 1]
        return [lo, hi]

    def sample(self, rng: random.Random) -> Any:
        if self.categorical:
            return rng.choice(self.args)
        lo, hi = self.args[:2]
        if self.kind == "randint":
            return rng.randrange(int(lo), int(hi))
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(lo), math.log(hi)))
        return rng.uniform(lo, hi)


class SearchSpace:
    """The parsed `tune.space`: Tune param space, decoding, grid enumeration and random samples."""

    def __init__(self, space: dict[str, dict[str, Any]]) -> None:
        items = ((path, *next(iter(d.items()))) for path, d in space.items())
        self.domains = [Domain(path, kind, tuple(args)) for path, kind, args in items]
        self._by_path = {d.path: d for d in self.domains}

    @property
    def paths(self) -> list[str]:
        return [d.path for d in self.domains]

    def param_space(self) -> dict[str, Any]:
        """Flat `{dotted path: Tune domain}` for `Tuner(param_space=...)`."""
        return {d.path: d.to_tune() for d in self.domains}

    def decode(self, config: dict[str, Any]) -> dict[str, Any]:
        """Tune's trial config → `{dotted path: spec value}` (keys outside the space are ignored)."""
        return {p: self._by_path[p].decode(v) for p, v in config.items() if p in self._by_path}

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid domains (one empty point when there are none)."""
        grids = [d for d in self.domains if d.kind == "grid"]
        combos = itertools.product(*(d.args for d in grids))
        return [{d.path: v for d, v in zip(grids, combo)} for combo in combos]

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """One random point over the non-grid domains."""
        return {d.path: d.sample(rng) for d in self.domains if d.kind != "grid"}

    def num_trials(self, num_samples: int) -> int:
        """Trials Tune will run: grid points × num_samples."""
        return len(self.grid_points()) * num_samples


def apply_values(train: TrainSpec, values: dict[str, Any]) -> TrainSpec:
    """`train` with `values` (`{'train.a.b': v}`) set at their dotted paths, re-validated by TrainSpec.

    Setting `train.model.name` to another model starts that model from its defaults (the base model's
    hyperparameters belong to the old model); other sampled `train.model.*` values then apply on top.
    Raises SpecError naming the offending paths.
    """
    data = train.model_dump(mode="json")
    ordered = sorted(values.items(), key=lambda kv: (kv[0] != "train.model.name", kv[0]))
    for path, value in ordered:
        if not path.startswith(PREFIX):
            raise SpecError("tune.space", [f"{path!r}: paths start with 'train.' (e.g. 'train.optimizer.lr')"])
        parts = path[len(PREFIX):].split(".")
        if parts == ["model", "name"] and value != data["model"].get("name"):
            data["model"] = {"name": value}
            continue
        _set(data, parts, value, path)
    try:
        return TrainSpec.model_validate(data)
    except ValidationError as exc:
        shown = ", ".join(f"{p}={label(v)!r}" for p, v in values.items())
        problems = [f"train.{line}" for line in format_errors(exc)]
        raise SpecError("tune.space", [f"with {shown}: {p}" for p in problems]) from None


def _set(data: dict, parts: list[str], value: Any, path: str) -> None:
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            where = ".".join(["train", *parts[: i + 1]])
            why = "is not a section" if part in node else "no such field"
            raise SpecError("tune.space", [f"{path!r}: {where} {why} (`voxray schema train` lists the fields)"])
        node = child
    node[parts[-1]] = value


def check_space(train: TrainSpec, space: SearchSpace, *, samples: int = 8, seed: int = 0,
                max_grid: int = 64) -> list[TrainSpec]:
    """Validate the space against the base train spec before anything starts; return the specs checked.

    Probes each categorical value and both ends of each range alone, then up to `max_grid` grid points and
    `samples` random full points (all domains together, so cross-field rules such as patch vs model are seen).
    Collects every problem into one SpecError.
    """
    problems: dict[str, str] = {}
    checked: list[TrainSpec] = []
    trials = [{d.path: v} for d in space.domains for v in d.probes()]
    rng = random.Random(seed)
    grid = space.grid_points()[:max_grid]
    trials += [{**point, **space.sample(rng)} for point in grid]
    trials += [{**rng.choice(grid), **space.sample(rng)} for _ in range(samples)]
    for values in trials:
        try:
            spec = apply_values(train, values)
        except SpecError as exc:
            for p in exc.problems:
                problems.setdefault(_problem_key(p), p)
            continue
        model_problems = _model_problems(spec)
        shown = ", ".join(f"{p}={label(v)!r}" for p, v in values.items())
        for p in model_problems:
            problems.setdefault(_problem_key(p), f"with {shown}: {p}")
        if not model_problems:
            checked.append(spec)
    if problems:
        raise SpecError("tune.space", list(problems.values()),
                        hint="narrow the domains above; every sampled train spec must be valid")
    return checked


def _problem_key(problem: str) -> str:
    """A problem without the sampled values, so one bad range is reported once, not once per sample."""
    at = problem.find(": train.")
    text = problem[at + 2:] if problem.startswith("with ") and at >= 0 else problem
    return re.sub(r" \(got .*\)$", "", text)


def _model_problems(spec: TrainSpec) -> list[str]:
    """Patch/dims problems of the sampled model (torch-free registry rules); channel counts are checked by
    training itself against the store."""
    from voxray.training.models import check_model

    n_in = len(spec.channels) if spec.channels else 1
    return check_model(spec.model, in_channels=n_in, out_channels=1, spatial_dims=len(spec.patch), patch=spec.patch)

"""Search-space parsing, decoding and up-front validation against the train spec (no Ray trials)."""

from __future__ import annotations

import random

import pytest

from voxray.platform.errors import SpecError
from voxray.platform.specs.train import TrainSpec
from voxray.platform.specs.tune import TuneSpec
from voxray.training.tune.space import SearchSpace, apply_values, check_space, label


@pytest.fixture
def base() -> TrainSpec:
    return TrainSpec(store="/tmp/none.zarr", model={"name": "unet_depth", "depth": 2, "base_channels": 4},
                     patch=[32, 32], steps=10)


def test_param_space_and_decode_round_trip_lists():
    space = SearchSpace({"train.optimizer.lr": {"loguniform": [1e-4, 1e-2]},
                         "train.channels": {"choice": [["FLAIR"], ["FLAIR", "T1w"]]},
                         "train.batch_size": {"randint": [1, 4]}})
    ps = space.param_space()
    assert set(ps) == {"train.optimizer.lr", "train.channels", "train.batch_size"}
    assert ps["train.channels"].categories == ["[FLAIR]", "[FLAIR, T1w]"]  # scalars for Optuna
    decoded = space.decode({"train.channels": "[FLAIR, T1w]", "train.batch_size": 3.0, "other": 1})
    assert decoded == {"train.channels": ["FLAIR", "T1w"], "train.batch_size": 3}
    assert isinstance(decoded["train.batch_size"], int)


def test_grid_points_are_the_cartesian_product():
    space = SearchSpace({"train.model.depth": {"grid": [1, 2]}, "train.batch_size": {"grid": [1, 2, 3]},
                         "train.optimizer.lr": {"uniform": [0.1, 0.2]}})
    points = space.grid_points()
    assert len(points) == 6 and space.num_trials(2) == 12
    assert {"train.model.depth": 2, "train.batch_size": 3} in points
    assert space.param_space()["train.model.depth"] == {"grid_search": [1, 2]}


def test_samples_respect_bounds():
    space = SearchSpace({"train.optimizer.lr": {"loguniform": [1e-4, 1e-2]}, "train.steps": {"randint": [5, 7]}})
    rng = random.Random(0)
    for _ in range(50):
        s = space.sample(rng)
        assert 1e-4 <= s["train.optimizer.lr"] <= 1e-2 and s["train.steps"] in (5, 6)


def test_apply_values_sets_dotted_paths_and_validates(base):
    spec = apply_values(base, {"train.optimizer.lr": 0.01, "train.channels": ["t2w"], "train.model.depth": 3})
    assert spec.optimizer.lr == 0.01 and spec.channels == ["t2w"] and spec.model.depth == 3
    assert base.optimizer.lr != 0.01  # the base is never mutated


def test_switching_model_name_starts_from_that_models_defaults(base):
    spec = apply_values(base, {"train.model.name": "unet", "train.model.channels": [4, 8]})
    assert spec.model.name == "unet" and spec.model.channels == [4, 8]
    whole = apply_values(base, {"train.model": {"name": "unet_depth", "depth": 1, "base_channels": 2}})
    assert whole.model.depth == 1


@pytest.mark.parametrize("space, needle", [
    ({"train.optimizr.lr": {"choice": [0.1]}}, "train.optimizr no such field"),
    ({"train.optimizer.lr": {"uniform": [-1, 1]}}, "train.optimizer.lr: Input should be greater than or equal to 0"),
    ({"train.model.depth": {"choice": [2, 9]}}, "train.model.depth=9"),
    ({"train.steps": {"uniform": [1, 10]}}, "train.steps: Input should be a valid integer"),
    ({"train.model.widths": {"choice": [[4, 8]]}}, "train.model.widths: unknown key"),
    ({"train.model.depth": {"choice": [7]}}, "train.patch: [32, 32] is not divisible"),
    ({"train.optimizer.lr.x": {"choice": [1]}}, "train.optimizer.lr is not a section"),
])
def test_check_space_names_the_bad_path(base, space, needle):
    with pytest.raises(SpecError) as err:
        check_space(base, SearchSpace(space))
    assert needle in str(err.value)
    assert "tune.space" in str(err.value)


def test_check_space_reports_a_bad_range_once(base):
    with pytest.raises(SpecError) as err:
        check_space(base, SearchSpace({"train.optimizer.lr": {"uniform": [-1, 1]}}), samples=20)
    assert len(err.value.problems) == 1


def test_check_space_returns_valid_specs(base):
    space = SearchSpace({"train.model.depth": {"grid": [1, 2, 3]}, "train.optimizer.lr": {"loguniform": [1e-4, 1e-2]}})
    specs = check_space(base, space, samples=4)
    assert {s.model.depth for s in specs} == {1, 2, 3} and len(specs) >= 3 + 2 + 3 + 4 - 1


def test_tune_spec_rejects_malformed_domains():
    with pytest.raises(ValueError, match="exactly one of"):
        TuneSpec(space={"train.optimizer.lr": {"normal": [0, 1]}})
    with pytest.raises(ValueError, match="cannot enumerate a grid"):
        TuneSpec(space={"train.batch_size": {"grid": [1, 2]}}, search="optuna")


def test_label_is_one_line_yaml():
    assert label(["FLAIR", "T1w"]) == "[FLAIR, T1w]"
    assert label({"name": "unet_depth", "depth": 2}) == "{name: unet_depth, depth: 2}"
    assert label(0.5) == 0.5 and label(None) is None


def test_only_validation_reports_reach_tune():
    from voxray.training.tune.driver import NAN_KEY, forwarded

    assert forwarded({"step": 50.0, "val/dice_mean": 0.1}, every=50, steps=120)
    assert forwarded({"step": 120}, every=50, steps=120)          # the final validation
    assert not forwarded({"step": 30}, every=50, steps=120)       # checkpoint-only report, stale metrics
    assert not forwarded({}, every=50, steps=120)
    assert forwarded({"step": 7, NAN_KEY: 7}, every=50, steps=120)

"""Input QA rules on small arrays: each check fires on the input it is for and stays quiet on a normal one; the
training fingerprint undoes the store's normalisation; policy and percentile rules."""

from __future__ import annotations

import numpy as np
import pytest

from voxray.preprocessing.normalize import normalize_channels
from voxray.training.qa import QARefused, check_input, enforce, header_value, score_percentile
from voxray.training.qa_reference import denormalize, training_fingerprint

from _infer_helpers import recorded_store, train_helpers

CHANNELS = ["FLAIR", "T1w", "t1gd", "T2w"]


@pytest.fixture(scope="module")
def store():
    return recorded_store({f"case{i:02d}": i for i in range(6)})


@pytest.fixture(scope="module")
def fingerprint(store):
    return training_fingerprint(store, store.case_ids(), None, CHANNELS)


def _record(spacing=(1.0, 1.0, 1.0), shape=(24, 24, 24), orientation="RAS") -> dict:
    return {"original_spacing": list(spacing), "ras_shape_zyx": list(shape), "orientation": orientation}


def _case(seed: int) -> np.ndarray:
    return train_helpers().brats_like_case((24, 24, 24), seed=seed)[0]


def _codes(report: dict) -> list[str]:
    return sorted(f["code"] for f in report["findings"])


def test_fingerprint_holds_the_training_geometry_and_profiles(fingerprint):
    assert fingerprint["cases"] == 6 and fingerprint["intensity_cases"] == 6
    assert fingerprint["spacing"]["min"] == [1.0, 1.0, 1.0] and fingerprint["fov"]["max"] == [24.0, 24.0, 24.0]
    assert fingerprint["orientations"] == ["RAS"] and fingerprint["dtypes"] is None  # no fingerprint.json here
    flair, t1 = fingerprint["intensity"]["FLAIR"], fingerprint["intensity"]["T1w"]
    assert all(lo <= m <= hi for lo, m, hi in zip(flair["low"], flair["median"], flair["high"]))
    assert flair["median"][-2] > t1["median"][-2] + 0.5  # FLAIR shows the large edema shell: a brighter tail


def test_a_normal_case_passes_and_each_problem_is_flagged(fingerprint):
    image = _case(50)
    clean = check_input(image, _record(), fingerprint, CHANNELS, ["float32"])
    assert clean["status"] == "ok" and clean["findings"] == [] and header_value(clean) == "ok"
    swapped = check_input(image[[1, 0, 2, 3]], _record(), fingerprint, CHANNELS)
    assert _codes(swapped) == ["channel_order"] and "'FLAIR' looks like 'T1w'" in swapped["findings"][0]["message"]
    thick = check_input(image, _record(spacing=(5.0, 1.0, 1.0), shape=(5, 24, 24)), fingerprint, CHANNELS)
    assert _codes(thick) == ["spacing"] and "Z (S-I) 5 mm" in thick["findings"][0]["message"]
    big = check_input(image, _record(shape=(24, 24, 80)), fingerprint, CHANNELS)
    assert _codes(big) == ["fov"] and header_value(big) == "warn; fov"
    flipped = check_input(image, _record(orientation="LPS"), fingerprint, CHANNELS)
    assert _codes(flipped) == ["orientation"] and flipped["status"] == "ok"  # info: reorientation is exact
    scaled = check_input(image * 3 + 1, _record(), fingerprint, CHANNELS)
    assert _codes(scaled) == ["intensity"] * 4 and {f["channel"] for f in scaled["findings"]} == set(CHANNELS)


def test_dtype_rules(fingerprint):
    fp = fingerprint | {"dtypes": ["int16"]}
    image = _case(50)
    assert check_input(image, _record(), fp, CHANNELS, ["int16"])["findings"] == []
    lossy = check_input(image, _record(), fp, CHANNELS, ["uint8"])
    assert lossy["status"] == "warn" and _codes(lossy) == ["dtype"]
    other = check_input(image, _record(), fp, CHANNELS, ["float32"])
    assert other["status"] == "ok" and other["findings"][0]["severity"] == "info"


def test_policy_percentile_and_old_cards(fingerprint):
    image = _case(50)
    with pytest.raises(QARefused, match="channel_order: channels look swapped") as err:
        enforce(check_input(image[[1, 0, 2, 3]], _record(), fingerprint, CHANNELS, policy="refuse"))
    assert err.value.report["status"] == "warn"
    enforce(check_input(image, _record(), fingerprint, CHANNELS, policy="refuse"))  # a clean input goes through
    old = check_input(image, _record(), None, CHANNELS)
    assert old["status"] == "ok" and old["checked"] is False
    with pytest.raises(ValueError, match="qa policy 'strict'"):
        check_input(image, _record(), fingerprint, CHANNELS, policy="strict")
    ref = {"cases": 4, "scores": [0.1, 0.2, 0.3, 0.4]}
    assert [score_percentile(s, ref) for s in (0.05, 0.2, 0.35, 9.0)] == [0.0, 50.0, 75.0, 100.0]
    assert score_percentile(0.3, None) is None


def test_denormalize_undoes_the_store_normalisation():
    rng = np.random.default_rng(0)
    raw = np.zeros((2, 8, 8, 8), np.float32)
    raw[:, 2:6, 2:6, 2:6] = rng.normal([[[[300.0]]], [[[80.0]]]], 20.0, size=(2, 4, 4, 4))
    for scheme in ("zscore_nonzero", "zscore", "none"):
        stored, norm = normalize_channels(raw, scheme)
        assert np.allclose(denormalize(stored, norm), raw, atol=1e-3), scheme

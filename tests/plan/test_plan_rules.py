"""`voxray plan`'s decisions without measuring a network: nnU-Net's spacing/resampling/normalisation rules, the
network topology and divisibility, the patch/batch search on a given cost, fingerprints from headers, the YAML."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from voxray.platform.errors import DataError
from voxray.training.plan import decide
from voxray.training.plan.fingerprint import Fingerprint, from_dataset, header_geometry
from voxray.training.plan.recipe import to_yaml
from voxray.training.plan.search import factorizer_for, factorizer_unfit, search_patch, unet_for

BRATS_META = {"layout": "msd_brats", "labels": {0: "bg", 1: "edema", 2: "nonenh", 3: "enh"},
              "regions": {"ET": [3], "TC": [2, 3], "WT": [1, 2, 3]}, "label_encoding": "index"}


def _fp(spacings, shapes, channels=("t1",), meta=None, intensity=None) -> Fingerprint:
    return Fingerprint(channels=list(channels), spacings=np.asarray(spacings, float), shapes=np.asarray(shapes, float),
                       cropped=False, source="headers", meta=meta or {"labels": {0: "bg", 1: "a", 2: "b"}},
                       intensity=intensity or {})


def test_target_spacing_is_the_median_for_isotropic_data():
    fp = _fp([[1, 1, 1], [1.2, 1, 1], [0.8, 1, 1]], [[100, 100, 100]] * 3)
    assert decide.target_spacing(fp).value == [1.0, 1.0, 1.0]


def test_thick_slices_take_their_tenth_percentile():
    """z > 3× coarser and > 3× fewer voxels: the 10th percentile of z (nnU-Net), not the median."""
    z = [3.0, 5.0, 5.0, 5.0, 6.0, 6.0, 7.0, 7.0, 7.0, 7.0]
    fp = _fp([[s, 0.8, 0.8] for s in z], [[30, 256, 256]] * len(z))
    d = decide.target_spacing(fp)
    assert d.value[0] == pytest.approx(np.percentile(z, 10)) and d.value[1:] == [0.8, 0.8]
    assert "10th percentile" in d.why
    # coarse but not short in voxels (a long thin-slab acquisition): the median stands
    fp = _fp([[s, 0.8, 0.8] for s in z], [[200, 256, 256]] * len(z))
    assert decide.target_spacing(fp).value[0] == pytest.approx(6.0)


def test_resampling_scheme_follows_the_anisotropy_rule():
    iso = _fp([[0.9375, 1.5, 0.9375]] * 3, [[48, 32, 48]] * 3)  # IBSR18: ratio 1.6
    assert decide.resampling(iso, [0.9375, 1.5, 0.9375]).value == {"scheme": "linear"}
    assert decide.resampling(iso, [0.9375, 1.5, 0.9375], threshold=1.5).value["scheme"] == "separate_z"
    thick = _fp([[0.9375, 5.0, 0.9375]] * 3, [[48, 10, 48]] * 3)
    d = decide.resampling(thick, [0.9375, 5.0, 0.9375])
    assert d.value == {"scheme": "separate_z", "order": 3, "order_z": 0, "anisotropy_threshold": 3.0}
    assert "3/3 cases" in d.why


def test_normalisation_per_modality():
    mr = decide.normalisation(_fp([[1, 1, 1]], [[9, 9, 9]], channels=("flair", "t1")))
    assert mr["normalize"].value == "zscore_nonzero" and "clip" not in mr
    stats = {"CT": {"n": 1000, "mean": 60.0, "std": 40.0, "percentile_00_5": -80.0, "percentile_99_5": 250.0}}
    ct = decide.normalisation(_fp([[1, 1, 1]], [[9, 9, 9]], channels=("CT",), intensity=stats))
    assert ct["normalize"].value == "ct_zscore" and ct["clip"].value == [-80.0, 250.0]
    assert ct["ct_stats"].value == [60.0, 40.0]
    with pytest.raises(DataError, match="intensity statistics"):
        decide.normalisation(_fp([[1, 1, 1]], [[9, 9, 9]], channels=("img",)), {"img": "CT"})
    with pytest.raises(DataError, match="one scheme"):
        decide.normalisation(_fp([[1, 1, 1]], [[9, 9, 9]], channels=("CT", "t1"), intensity=stats))


def test_task_from_the_label_map():
    assert decide.task(_fp([[1, 1, 1]], [[9, 9, 9]], meta=BRATS_META)).value == "brats_regions"
    assert decide.task(_fp([[1, 1, 1]], [[9, 9, 9]], meta={"labels": {0: "bg", 1: "lesion"}})).value == "binary"
    assert decide.task(_fp([[1, 1, 1]], [[9, 9, 9]])).value == "labels"


def test_unet_topology_reaches_a_small_bottleneck_and_pools_thick_slices_later():
    net = unet_for([128, 128, 128], [1, 1, 1])
    assert net.model["channels"] == [32, 64, 128, 256, 320, 320, 320]  # + MONAI's bottom unit
    assert net.model["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 5  # full-resolution first level, then 5 poolings
    assert all(4 <= b <= 8 for b in net.bottleneck)
    net = unet_for([16, 160, 160], [5.0, 0.9, 0.9])
    assert net.model["strides"][1] == [1, 2, 2]  # z (5 mm) waits until in-plane spacing catches up
    assert all(4 <= b <= 8 for b in net.bottleneck), net.bottleneck
    assert all(p % d == 0 for p, d in zip([16, 160, 160], net.divisors))


def test_planned_unet_keeps_full_resolution_features():
    """The planned U-Net's first level runs at the input resolution (nnU-Net's first stage); MONAI's default
    strides would halve it in the first convolution."""
    import torch

    from voxray.platform.specs.train import TrainSpec
    from voxray.training.loop import build_network

    net = unet_for([16, 16, 16], [1, 1, 1], base=4)
    spec = TrainSpec.model_validate({"model": net.model, "patch": [16, 16, 16]})
    model = build_network(spec, in_channels=1, out_channels=2)
    first = model.model[0]  # MONAI UNet: the first down layer
    with torch.no_grad():
        assert first(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 4, 16, 16, 16)
        assert model(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_factorizer_respects_its_divisibility_rule():
    for patch in ([128, 128, 128], [64, 32, 64], [40, 48, 48]):
        net = factorizer_for(patch)
        levels, window = len(net.model["widths"]), net.model["window"]
        assert levels >= 4 and net.divisors[0] == 2 ** (levels - 1) * window
        assert all(4 <= b <= 8 for b in net.bottleneck), (patch, net.bottleneck)
    assert "coarser" in factorizer_unfit([30, 256, 256], [5.0, 0.9, 0.9])
    assert "padding" in factorizer_unfit([16, 40, 40], [1, 1, 1])
    assert factorizer_unfit([140, 170, 140], [1, 1, 1]) is None


def _linear_cost(per_voxel=400.0, fixed=50e6):
    return lambda net, patch, batch: fixed + per_voxel * batch * math.prod(patch)


@pytest.mark.parametrize("family", ["unet", "swin_factorizer"])
def test_search_fits_the_budget_and_shrinks_the_relatively_largest_axis(family):
    median = [138.0, 170.0, 139.0]
    cost = _linear_cost()
    budget = 1.2e9
    found = search_patch(family, median, [1, 1, 1], 484, budget, cost)
    assert cost(found.net, found.patch, found.batch) <= budget
    assert all(p % d == 0 for p, d in zip(found.patch, found.net.divisors))
    assert found.batch >= 2 and cost(found.net, found.patch, found.batch + 1) > budget or found.batch == 64
    assert len(found.trail) > 1  # the median case did not fit: shrunk
    # a tight budget leaves the patch smaller, and the error names the smallest patch when nothing fits
    small = search_patch(family, median, [1, 1, 1], 484, 0.2e9, cost)
    assert math.prod(small.patch) < math.prod(found.patch)
    with pytest.raises(DataError, match="budget"):
        search_patch(family, median, [1, 1, 1], 484, 40e6, cost)


def test_batch_is_capped_by_five_percent_of_the_dataset():
    found = search_patch("unet", [40, 48, 48], [1, 1, 1], 3, 1e12, _linear_cost())
    assert found.patch == [40, 48, 48] and found.batch == 2  # 3 cases: 5 % is far below 2 patches
    big = search_patch("unet", [40, 48, 48], [1, 1, 1], 400, 1e12, _linear_cost())
    assert big.batch == int(0.05 * 400)


@pytest.mark.parametrize("layout,shape,spacing", [
    ("msd_brats", (24, 24, 16), None), ("isles2022", (24, 24, 16), None), ("ibsr18", (24, 10, 24), (0.9375, 5, 0.9375)),
])
def test_header_geometry_matches_the_decoded_volume(tmp_path, layout, shape, spacing):
    """Planning reads headers only; they must say what the adapter's decoded, reoriented volume says."""
    from voxray.platform.specs.preprocess import DatasetSpec
    from voxray.preprocessing.datasets import adapter_from_spec
    from voxray.preprocessing.resample import to_ras_zyx
    from voxray.preprocessing.synth import synth_dataset

    root = synth_dataset(layout, tmp_path / layout, cases=2, shape=shape, spacing=spacing)
    ds = DatasetSpec(layout=layout, root=str(root))
    fp = from_dataset(ds)
    assert fp.source == "headers" and fp.cases == 2 and fp.labelled == 2
    adapter = adapter_from_spec(ds)
    case = adapter.discover(root)[0]
    vol = adapter.load(case)
    _, _, geom = to_ras_zyx(vol.image, None, vol.affine)
    np.testing.assert_allclose(fp.spacings[0], geom["spacing_zyx"], rtol=1e-5)
    np.testing.assert_allclose(fp.shapes[0], geom["ras_shape_zyx"])


def test_header_geometry_reorients_to_ras_zyx(tmp_path):
    import nibabel as nib

    affine = np.array([[0, 0, 2.0, 0], [-0.5, 0, 0, 0], [0, -3.0, 0, 0], [0, 0, 0, 1]])  # PIR-like
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine), str(path))
    shape, spacing = header_geometry(path)
    # file axes: i → A/P (y, 0.5 mm), j → S/I (z, 3 mm), k → R (x, 2 mm)
    assert shape == [5, 4, 6] and spacing == pytest.approx([3.0, 0.5, 2.0])


def test_yaml_comments_every_key_and_round_trips():
    data = {"kind": "train", "train": {"patch": [32, 64, 64], "model": {"name": "unet", "channels": [8, 16]}}}
    comments = {"kind": "why kind", "train.patch": "why " * 60, "train.model": "why model"}
    text = to_yaml(data, comments, ["header"])
    assert yaml.safe_load(text) == data
    assert text.startswith("# header\n") and "  # why model\n  model:\n" in text
    assert all(len(line) <= 118 for line in text.splitlines())


def test_a_compute_budget_narrows_the_network_before_starving_the_patch(monkeypatch):
    """Under --hours a step must leave room for MIN_STEPS: a wide network that would need a smaller patch than memory
    allows gives way to a narrower one (cost per voxel ∝ width here), and the reason is written down."""
    from voxray.training.plan import recipe
    from voxray.training.plan.memory import StepCost

    def fake_measure(spec, meta, in_channels, probe_patch, device="cpu"):
        width = spec.model.channels[0]
        return StepCost(static=1e6, floor=1e6, fixed=0.0, per_voxel=10.0 * width, seconds_per_voxel=width * 2e-8,
                        device="cpu", probes=((1, 1, 0.0),), probe_patch=tuple(probe_patch))

    monkeypatch.setattr(recipe, "measure_step", fake_measure)
    fp = _fp([[1, 1, 1]] * 4, [[64, 64, 64]] * 4)
    # 0.09 s per step: a 64³ batch of 2 costs 32 × 2e-8 × 524288 = 0.34 s at width 32, 0.17 s at 16, 0.084 s at 8
    hours = 0.09 * recipe.MIN_STEPS / (3600 * 0.9)
    opts = recipe.PlanOptions(model="unet", memory_gb=4, hours=hours)
    found, _, note = recipe._fit(fp, opts, "labels", "unet", [64.0] * 3, [1.0] * 3, "cpu")
    assert found.net.model["channels"][0] == 8 and "narrower than nnU-Net's 32" in note
    assert found.patch == [64, 64, 64] and found.batch == 2
    # not even width 8 keeps the whole case: the patch shrinks at width 8
    tight = recipe.PlanOptions(model="unet", memory_gb=4, hours=hours / 4)
    found, _, _ = recipe._fit(fp, tight, "labels", "unet", [64.0] * 3, [1.0] * 3, "cpu")
    assert found.net.model["channels"][0] == 8 and math.prod(found.patch) < 64**3
    assert 8 * 2e-8 * found.batch * math.prod(found.patch) <= 0.09 / 4 + 1e-9
    roomy = recipe.PlanOptions(model="unet", memory_gb=4, hours=10)
    found, _, note = recipe._fit(fp, roomy, "labels", "unet", [64.0] * 3, [1.0] * 3, "cpu")
    assert found.net.model["channels"][0] == 32 and note == "" and found.patch == [64, 64, 64]


def test_optimiser_follows_the_run_length():
    from voxray.training.plan.recipe import LONG_RUN, _train_base

    short, why, _ = _train_base("labels", "unet", 1000)
    assert short["optimizer"]["name"] == "adamw" and short["schedule"]["warmup_steps"] == 20 and "short run" in why
    long, why, sched = _train_base("labels", "unet", LONG_RUN)
    assert long["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.99, "weight_decay": 3.0e-5}
    assert long["schedule"]["name"] == "poly" and "nnU-Net" in why
    paper, _, _ = _train_base("brats_regions", "swin_factorizer", 10 * LONG_RUN)
    assert paper["optimizer"]["lr"] == 1.0e-4 and paper["schedule"]["warmup_steps"] == 5000

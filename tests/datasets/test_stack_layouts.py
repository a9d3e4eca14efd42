"""2D-slice layouts (lgg_tif, uwmadison_gi): numeric slice order, RLE labels with overlaps, broken datasets."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from PIL import Image

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets import CaseError, get_adapter
from voxray.preprocessing.datasets.rle import rle_encode

LGG_SHAPE = (64, 64, 12)
UW_SHAPE = (40, 56, 6)  # non-square: height 40, width 56 catches transposed RLE / file names


def test_lgg_numeric_slice_order(synth_root):
    root = synth_root("lgg_tif", shape=LGG_SHAPE)
    adapter = get_adapter("lgg_tif")
    case = adapter.discover(root)[0]
    names = [p.name for p in case.images["image"]]
    assert names == [f"{case.case_id}_{k}.tif" for k in range(1, 13)]  # _2 before _10, not lexicographic
    assert [p.name for p in case.label][-1] == f"{case.case_id}_12_mask.tif"
    vol = adapter.load(case)
    assert vol.image.shape == (3, 64, 64, 12) and vol.label.shape == (64, 64, 12)
    for k in (0, 1, 9, 11):
        np.testing.assert_array_equal(vol.image[:, :, :, k], np.moveaxis(tifffile.imread(case.images["image"][k]), -1, 0))
    assert set(np.unique(vol.label)) == {0, 1} and vol.label.any(axis=(0, 1)).sum() >= 3
    assert vol.image[1][vol.label == 1].mean() > 1.5 * vol.image[1][(vol.label == 0) & (vol.image[1] > 0)].mean()
    assert adapter.metadata()["slice_axis"] == 2 and case.meta["clinical"]["Patient"] == "TCGA_CS_4941"
    np.testing.assert_allclose(vol.affine, np.eye(4))


def test_lgg_default_is_real_size(tmp_path):
    from voxray.preprocessing.synth import synth_dataset

    root = synth_dataset("lgg_tif", tmp_path, cases=1)
    tif = next(root.glob("TCGA_*/*_1.tif"))
    arr = tifffile.imread(tif)
    assert arr.shape == (256, 256, 3) and arr.dtype == np.uint8
    mask = tifffile.imread(tif.with_name(tif.stem + "_mask.tif"))
    assert mask.shape == (256, 256) and set(np.unique(mask)) <= {0, 255}


def test_lgg_broken(broken_copy, tmp_path):
    root = broken_copy("lgg_tif", shape=LGG_SHAPE)
    adapter = get_adapter("lgg_tif")
    first, second = adapter.discover(root)
    bad = first.images["image"][4]
    tifffile.imwrite(bad, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    with pytest.raises(CaseError) as info:
        adapter.load(first)
    assert info.value.file == str(bad) and "slice is 32x32x3, expected 64x64x3" in info.value.reason
    second.label[3].unlink()
    problems = adapter.discover(root)[1].problems
    assert problems == (f"missing mask {second.label[3]}",)
    with pytest.raises(DataError, match="kaggle_3m"):
        adapter.discover(tmp_path)


def test_uwmadison_round_trip(synth_root):
    root = synth_root("uwmadison_gi", cases=2, test_cases=1, shape=UW_SHAPE)
    adapter = get_adapter("uwmadison_gi")
    cases = adapter.discover(root)
    assert [c.case_id for c in cases] == ["case123_day0", "case123_day20"]
    case = cases[0]
    assert case.images["mri"][0].name == "slice_0001_56_40_1.50_1.50.png"  # width 56, height 40
    assert Image.open(case.images["mri"][0]).mode.startswith("I;16")
    vol = adapter.load(case)
    assert vol.image.shape == (1, 40, 56, 6) and vol.label.shape == (40, 56, 6) and vol.spacing == (1.5, 1.5, 3.0)
    meta = adapter.metadata()
    assert meta["label_encoding"] == "bitmask" and meta["labels"][3] == "stomach"
    assert (vol.label == 3).any()  # large and small bowel overlap somewhere: both bits set
    rows = {(r["id"], r["class"]): r["segmentation"] for r in csv.DictReader((root / "train.csv").open())}
    for k in range(6):
        for bit, cls in enumerate(("large_bowel", "small_bowel", "stomach")):
            assert rle_encode((vol.label[:, :, k] >> bit) & 1) == rows[(f"case123_day0_slice_{k + 1:04d}", cls)]
    test = get_adapter("uwmadison_gi", split="test").discover(root)
    assert [(c.case_id, c.label) for c in test] == [("case124_day0", None)]


def test_uwmadison_rle_past_image(broken_copy):
    root = broken_copy("uwmadison_gi", shape=UW_SHAPE)
    path = root / "train.csv"
    lines = path.read_text().splitlines()
    head, first = lines[0], lines[1].split(",")
    lines[1] = ",".join([first[0], first[1], f"{40 * 56 - 2} 10"])
    path.write_text("\n".join([head, *lines[1:]]) + "\n")
    adapter = get_adapter("uwmadison_gi")
    with pytest.raises(CaseError) as info:
        adapter.load(adapter.discover(root)[0])
    assert info.value.file == str(path)
    assert "case123_day0_slice_0001" in info.value.reason and "past the 40x56 image" in info.value.reason


def test_uwmadison_broken(broken_copy, tmp_path):
    root = broken_copy("uwmadison_gi", shape=UW_SHAPE)
    path = root / "train.csv"
    kept = [line for line in path.read_text().splitlines() if not line.startswith("case123_day20")]
    path.write_text("\n".join(kept) + "\n")
    adapter = get_adapter("uwmadison_gi")
    first, second = adapter.discover(root)
    assert first.ok and "no rows for case123_day20 in" in second.problems[0]
    png = first.images["mri"][2]
    Image.fromarray(np.zeros((56, 40), np.uint16)).save(png)
    with pytest.raises(CaseError, match="PNG is 56x40 .* name says 40x56"):
        adapter.load(first)
    with pytest.raises(DataError, match="no train/ under .*UW-Madison"):
        adapter.discover(tmp_path)

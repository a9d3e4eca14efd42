"""`voxray synth` → `voxray inspect --json` → adapter round trip for every layout, plus CLI error paths."""

from __future__ import annotations

import json

import pytest

from voxray.platform.cli.app import main
from voxray.preprocessing.datasets import LAYOUTS, get_adapter

SHAPES = {"lgg_tif": (48, 48, 8), "uwmadison_gi": (32, 40, 6)}
PAIRS = ["--images", "T1=*/t1.nii.gz", "--images", "T2=*/t2.nii.gz", "--label", "*/label.nii.gz"]
EXPECTED_LABELS = {"msd_brats": [0, 1, 2, 3], "brats2023": [0, 1, 2, 3], "ibsr18": [0, 1, 2, 3], "isles2022": [0, 1],
                   "lgg_tif": [0, 1], "nifti_pairs": [0, 1]}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synth_inspect_round_trip(layout, tmp_path, capsys):
    shape = SHAPES.get(layout, (24, 24, 20))
    out = tmp_path / layout
    assert main(["synth", "--layout", layout, "--out", str(out), "--cases", "2", "--seed", "1",
                 "--shape", *map(str, shape)]) == 0
    capsys.readouterr()
    extra = PAIRS if layout == "nifti_pairs" else []
    assert main(["inspect", str(out), "--layout", layout, "--json", *extra]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == layout and report["cases"] == 2 and report["ok"] == 2, report["rows"]
    row = report["rows"][0]
    assert row["shape"] == list(shape) and len(row["modalities"]) >= 1 and len(row["spacing"]) == 3
    if layout in EXPECTED_LABELS:
        assert report["label_values_seen"] == EXPECTED_LABELS[layout]
    else:  # uwmadison bitmask: background, single organs and at least one overlap value
        assert 0 in report["label_values_seen"] and len(report["label_values_seen"]) >= 3
    options = {"images": {"T1": "*/t1.nii.gz", "T2": "*/t2.nii.gz"}, "label": "*/label.nii.gz"} if extra else {}
    adapter = get_adapter(layout, **options)
    vol = adapter.load(adapter.discover(out)[1])
    assert vol.image.shape == (len(adapter.channels), *shape) and vol.label.shape == tuple(shape)


def test_inspect_reports_problems_and_wrong_root(tmp_path, capsys):
    out = tmp_path / "msd"
    assert main(["synth", "--layout", "msd_brats", "--out", str(out), "--shape", "16", "16", "16"]) == 0
    (out / "labelsTr" / "BRATS_001.nii.gz").unlink()
    capsys.readouterr()
    assert main(["inspect", str(out), "--layout", "msd_brats", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["with_problems"] == 1 and "missing label" in report["rows"][0]["problems"][0]
    assert main(["inspect", str(tmp_path / "empty"), "--layout", "ibsr18"]) == 4  # DataError exit code
    assert "does not exist" in capsys.readouterr().err


def test_synth_rejects_bad_arguments(tmp_path, capsys):
    assert main(["synth", "--layout", "ibsr18", "--out", str(tmp_path), "--test-cases", "1"]) == 1
    assert "no unlabelled test part" in capsys.readouterr().err
    assert main(["synth", "--layout", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown layout 'nope'" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path), "--layout", "nifti_pairs", "--images", "T1"]) == 1
    assert "MODALITY=GLOB" in capsys.readouterr().err

"""`voxray inspect`: channel names of 4D images, and a plain statement when cases (or all of them) have no label."""

from __future__ import annotations

import json

import pytest

from voxray.platform.cli.app import main


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect") / "msd"
    assert main(["synth", "--layout", "msd_brats", "--out", str(out), "--cases", "2", "--test-cases", "1",
                 "--shape", "16", "16", "16"]) == 0
    return out


def test_4d_images_list_their_channel_names(msd, capsys):
    capsys.readouterr()
    assert main(["inspect", str(msd), "--layout", "msd_brats", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["modalities"] for r in report["rows"]] == [["flair", "t1w", "t1gd", "t2w"]] * 2
    assert (report["labelled"], report["unlabelled"]) == (2, 0)
    (msd / "labelsTr" / "BRATS_001.nii.gz").rename(msd / "hidden.nii.gz")  # a case that fails discovery too
    try:
        assert main(["inspect", str(msd), "--layout", "msd_brats", "--json"]) == 0
        row = json.loads(capsys.readouterr().out)["rows"][0]
        assert row["status"] == "error" and row["modalities"] == ["flair", "t1w", "t1gd", "t2w"]
    finally:
        (msd / "hidden.nii.gz").rename(msd / "labelsTr" / "BRATS_001.nii.gz")


def test_inspect_says_how_many_cases_have_no_label(msd, capsys):
    capsys.readouterr()
    assert main(["inspect", str(msd), "--layout", "msd_brats", "--split", "all"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 of 3 cases have no label" in out and "only the 2 labelled" in out
    assert main(["inspect", str(msd), "--layout", "msd_brats", "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["labelled"] == 0
    assert main(["inspect", str(msd), "--layout", "msd_brats", "--split", "test"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "no labels: none of the 1 cases has a label file" in out and "not trained" in out

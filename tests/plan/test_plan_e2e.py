"""`voxray plan` end to end: synthetic MSD BraTS, thick-slice IBSR18 and ISLES 2022 → a YAML that validates, then
preprocesses and trains (smoke size: 2 steps, training in the driver) through `run_job`, as `voxray run` does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from voxray.platform.cli.app import main
from voxray.platform.specs.loader import load_job

# layout → (synth shape X Y Z, synth spacing or None, expected task)
DATASETS = {
    "msd_brats": ((24, 24, 16), None, "brats_regions"),
    "ibsr18": ((32, 8, 32), (0.9375, 5.0, 0.9375), "labels"),  # clinical 5 mm coronal slices
    "isles2022": ((24, 24, 16), None, "binary"),
}
SMOKE = ["train.steps=2", "train.validation.every=2", "train.validation.max_cases=1", "train.checkpoint.every=2",
         "train.scaling.num_workers=0", "train.sampling.loader_workers=0", "train.tracking.mlflow=false",
         "preprocess.memory_per_case_mb=64"]


def _plan(tmp: Path, layout: str, *extra: str) -> Path:
    from voxray.preprocessing.synth import synth_dataset

    shape, spacing, _ = DATASETS[layout]
    root = synth_dataset(layout, tmp / "data" / layout, cases=3, shape=shape, spacing=spacing)
    out = tmp / "jobs" / f"{layout}.yaml"
    rc = main(["plan", str(root), "--layout", layout, "--memory-gb", "0.5", "--steps", "2", "--device", "cpu",
               "--out", str(out), *extra])
    assert rc == 0 and out.is_file()
    return out


@pytest.fixture(scope="module")
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("layout", sorted(DATASETS))
def test_planned_yaml_validates_and_trains(layout, tmp_path, ray_session, one_thread):
    from voxray.platform.stages import run_job
    from voxray.preprocessing.store import Store

    out = _plan(tmp_path, layout)
    text = out.read_text()
    data = yaml.safe_load(text)
    assert data["kind"] == "pipeline" and data["train"]["task"] == DATASETS[layout][2]
    _every_field_explained(text, data)
    assert main(["validate", str(out)]) == 0
    job = load_job(out, SMOKE + [f"train.output={tmp_path / 'runs'}", f"train.registry={tmp_path / 'registry'}"])
    result = run_job(job)
    assert result.ok, result.message
    assert "train.val/dice_mean" in result.summary and Path(result.summary["train.model"]).is_dir()
    store = Store.open(job.preprocess.store)
    scheme = data["preprocess"]["resampling"]["scheme"]
    for case in store.case_ids():
        assert store.case_attrs(case)["record"]["resampling"]["scheme"] == scheme  # serving inverts what was done


def test_thick_slices_get_separate_z_and_a_non_cubic_patch(tmp_path):
    data = yaml.safe_load(_plan(tmp_path, "ibsr18").read_text())
    pre, train = data["preprocess"], data["train"]
    assert pre["resampling"]["scheme"] == "separate_z"
    assert pre["spacing"] == [0.9375, 5.0, 0.9375]
    assert len(set(train["patch"])) > 1
    assert train["model"]["name"] == "unet" and [1, 2] == sorted({s[1] for s in train["model"]["strides"]})
    assert train["patch"][1] < train["patch"][0]  # (z, y, x): the 5 mm coronal axis holds fewest voxels


def test_native_ibsr18_stays_linear_but_is_not_cubic(tmp_path):
    """IBSR18's own 0.94 × 1.5 × 0.94 mm is below nnU-Net's 3× rule: linear 3D, still a non-cubic patch;
    --anisotropy-threshold 1.5 asks for separate-z anyway."""
    from voxray.preprocessing.synth import synth_dataset

    root = synth_dataset("ibsr18", tmp_path / "ibsr", cases=2, shape=(32, 24, 32))
    for threshold, scheme in ((None, "linear"), ("1.5", "separate_z")):
        out = tmp_path / f"ibsr-{threshold}.yaml"
        args = ["plan", str(root), "--layout", "ibsr18", "--model", "unet", "--memory-gb", "0.5", "--steps", "5",
                "--out", str(out)]
        assert main(args + (["--anisotropy-threshold", threshold] if threshold else [])) == 0
        data = yaml.safe_load(out.read_text())
        assert data["preprocess"]["resampling"]["scheme"] == scheme
        assert len(set(data["train"]["patch"])) > 1 and data["train"]["steps"] == 5


def test_plan_from_a_store_reuses_it_when_it_matches(tmp_path, ray_session, one_thread):
    """Planning from a store: the same decisions give a `train` job on that store; a store converted with other
    settings gives a pipeline that rebuilds it from the dataset recorded in the store's resolved job."""
    from voxray.platform.stages import run_job

    out = _plan(tmp_path, "msd_brats", "--steps", "2")
    job = load_job(out, ["train.steps=1"])
    assert run_job(type(job).model_validate({**job.model_dump(), "train": None})).ok  # preprocess only
    again = tmp_path / "jobs" / "again.yaml"
    assert main(["plan", job.preprocess.store, "--memory-gb", "0.5", "--steps", "2", "--out", str(again)]) == 0
    data = yaml.safe_load(again.read_text())
    assert data["kind"] == "train" and Path(again.parent / data["train"]["store"]).resolve() == \
        Path(job.preprocess.store).resolve()
    assert main(["validate", str(again)]) == 0


def test_bad_requests_are_errors(tmp_path, capsys):
    assert main(["plan", str(tmp_path), "--out", str(tmp_path / "x.yaml")]) != 0
    assert "not a store" in capsys.readouterr().err
    from voxray.preprocessing.synth import synth_dataset

    root = synth_dataset("ibsr18", tmp_path / "thick", cases=2, shape=(32, 8, 32), spacing=(0.9375, 5.0, 0.9375))
    assert main(["plan", str(root), "--layout", "ibsr18", "--model", "swin_factorizer",
                 "--out", str(tmp_path / "y.yaml")]) != 0
    assert "pools all axes together" in capsys.readouterr().err
    assert main(["plan", str(root), "--layout", "ibsr18", "--modality", "t1=PET", "--out", str(tmp_path / "z")]) != 0


def _every_field_explained(text: str, data: dict) -> None:
    """Every key of the preprocess/train sections sits under a `# …` comment line."""
    lines = text.splitlines()
    for section in ("preprocess", "train"):
        for key in data[section]:
            i = next(n for n, line in enumerate(lines) if line.startswith(f"  {key}:"))
            assert lines[i - 1].lstrip().startswith("#"), (section, key)

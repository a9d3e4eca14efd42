"""Layout guard and packaging: stdlib `platform` is never shadowed; the wheel carries all four subpackages."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("platform", "preprocessing", "training", "serving")


def test_stage_folders_have_no_top_level_init():
    for folder in STAGES:
        assert (ROOT / folder).is_dir(), folder
        assert not (ROOT / folder / "__init__.py").exists(), f"{folder}/__init__.py would shadow/rename a package"


def test_import_platform_from_repo_root_is_stdlib():
    code = "import platform, sys; print(platform.__file__); print(platform.python_version())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path = out.splitlines()[0]
    assert not path.startswith(str(ROOT / "platform")), path
    assert out.splitlines()[1] == ".".join(map(str, sys.version_info[:3]))


def test_every_source_subfolder_is_a_listed_package():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for stage in STAGES:
        for d in [ROOT / stage, *[p.parent for p in (ROOT / stage).rglob("__init__.py")]]:
            if "__pycache__" in d.parts:
                continue
            name = "voxray." + ".".join(d.relative_to(ROOT).parts)
            assert name in listed, f"{name} is missing from [tool.setuptools] packages in pyproject.toml"


def test_no_cuda_pulling_packages_installed():
    names = {d.metadata["Name"].lower() for d in md.distributions()}
    assert not names & {"torchvision", "timm", "segmentation-models-pytorch", "torchaudio"}
    assert md.version("torch").startswith("2.13.0")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, capture_output=True)
    (whl,) = out.glob("voxray-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_contains_all_subpackages(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for stage in STAGES:
        assert any(n.startswith(f"voxray/{stage}/") and n.endswith(".py") for n in names), stage
    assert "voxray/platform/specs/job.py" in names
    from voxray.serving.page import ASSETS  # the browser viewer's files ship as package data

    assert {f"voxray/serving/static/{name}" for name in ASSETS} <= set(names)
    assert not any(n.startswith(("platform/", "tests/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "voxray = voxray.platform.cli.app:main" in zipfile.ZipFile(wheel).read(entry).decode()


@pytest.mark.slow
def test_wheel_installs_into_clean_venv_with_working_cli(wheel, tmp_path):
    env_dir = tmp_path / "clean"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    # Third-party dependencies come from the dev venv (installing them again would take minutes); voxray itself
    # must come from the wheel: the dev venv's editable finder is not activated by a plain path entry.
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    deps = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    (site / "zz_deps.pth").write_text(str(deps) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run([str(env_dir / "bin" / "voxray"), "version"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "voxray 0.1.0" in out
    where = subprocess.run([str(py), "-c", "import voxray.platform.specs as s; print(s.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where
    jobs = sorted(str(p) for p in (ROOT / "examples" / "jobs").glob("*.yaml"))
    res = subprocess.run([str(env_dir / "bin" / "voxray"), "validate", *jobs], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr

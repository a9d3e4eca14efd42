"""`voxray store ls|verify|preview` on a small store built without Ray."""

from __future__ import annotations

import json

import pytest

from _pp_helpers import convert_loop, job, synth
from voxray.platform.cli.app import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    root = synth(tmp / "msd_brats", cases=2)
    uri = str(tmp / "s.zarr")
    convert_loop(job(root, uri))
    return uri


def test_ls_and_json(store, capsys):
    assert main(["store", "ls", store]) == 0
    out = capsys.readouterr().out
    assert "BRATS_001" in out and "2 ok / 0 failed" in out
    assert main(["store", "ls", store, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layout"] == "msd_brats" and [c["status"] for c in data["cases"]] == ["ok", "ok"]


def test_verify_ok_and_missing_store(store, tmp_path, capsys):
    assert main(["store", "verify", store, "--sources"]) == 0
    assert "store verified" in capsys.readouterr().out
    assert main(["store", "verify", str(tmp_path / "nope.zarr")]) == 4
    assert "no zarr store" in capsys.readouterr().err


def test_preview_png(store, tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["store", "preview", store, "BRATS_001", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["store", "preview", store, "BRATS_001", "--out", str(out), "--slice", "999"]) == 4
    assert "out of range" in capsys.readouterr().err
    assert main(["store", "preview", store, "BRATS_404", "--out", str(out)]) == 4

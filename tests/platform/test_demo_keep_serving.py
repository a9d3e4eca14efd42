"""`voxray demo --keep-serving`: Ray held up around the demo, the viewer URL (and a generated key) printed, Serve
shut down on Ctrl-C. The demo itself is faked here (the real one runs for minutes; tests/examples covers its job)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from voxray.platform.cli.app import main
from voxray.platform.demo import DemoResult

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "examples" / "jobs" / "pipeline_demo.yaml"
VIEWER = "http://127.0.0.1:8765/viewer/"


@pytest.fixture()
def fake_demo(monkeypatch):
    from voxray.platform import demo as demo_mod
    from voxray.platform import runtime
    from voxray.platform.cli import demo as cli_demo

    seen: dict = {"ray_up": False}

    @contextmanager
    def fake_runtime(spec=None, address=None):
        seen["ray_up"] = True
        yield None
        seen["ray_up"] = False

    def fake_run(job, keep_serving=False):
        seen.update(keep_serving=keep_serving, ray_during_demo=seen["ray_up"])
        monkeypatch.setenv("VOXRAY_API_KEY", "generated-demo-key")  # as run_demo does when the variable is unset
        return DemoResult(quality=[{"region": "mean", "model_dice": 0.9, "baseline_dice": 0.5, "gain": 0.4,
                                    "cases": 5}], artefacts={"overlay": "/x.png", "viewer": VIEWER},
                          timings={"pipeline_s": 1.0})

    monkeypatch.delenv("VOXRAY_API_KEY", raising=False)
    monkeypatch.setattr(demo_mod, "run_demo", fake_run)
    monkeypatch.setattr(runtime, "ray_runtime", fake_runtime)
    monkeypatch.setattr(cli_demo, "serve_until_interrupted",
                        lambda url: seen.update(served=url, ray_while_serving=seen["ray_up"]))
    return seen


def test_keep_serving_holds_ray_and_prints_the_viewer(fake_demo, capsys):
    assert main(["demo", "--job", str(JOB), "--keep-serving"]) == 0
    out = capsys.readouterr().out
    assert fake_demo["keep_serving"] and fake_demo["ray_during_demo"] and fake_demo["ray_while_serving"]
    assert fake_demo["served"] == VIEWER
    assert f"viewer: {VIEWER}" in out and "generated-demo-key" in out


def test_plain_demo_prints_the_viewer_and_does_not_wait(fake_demo, capsys):
    assert main(["demo", "--job", str(JOB)]) == 0
    out = capsys.readouterr().out
    assert fake_demo["keep_serving"] is False and "served" not in fake_demo
    assert VIEWER in out and "--keep-serving" in out and "generated-demo-key" not in out


def test_serve_until_interrupted_shuts_serve_down(monkeypatch):
    from ray import serve

    from voxray.platform.cli import demo as cli_demo

    calls = []
    monkeypatch.setattr(serve, "shutdown", lambda: calls.append("shutdown"))

    def interrupted(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_demo.time, "sleep", interrupted)
    cli_demo.serve_until_interrupted(VIEWER)
    assert calls == ["shutdown"]

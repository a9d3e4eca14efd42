"""The generated spec reference must match the pydantic models (no hand-maintained copy that drifts)."""

from pathlib import Path

from voxray.platform.specs.reference import markdown_reference

ROOT = Path(__file__).resolve().parents[2]


def test_spec_reference_is_up_to_date():
    committed = (ROOT / "docs" / "spec-reference.md").read_text()
    assert committed == markdown_reference(), "docs/spec-reference.md is stale: run `make docs`"


def test_readme_shows_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make test" in text and "make demo" in text

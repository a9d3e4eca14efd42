"""Store verbs: `voxray store verify|preview|ls` over a preprocessed zarr store (path or fsspec URI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from voxray.platform.cli import _output
from voxray.platform.cli._options import JsonOpt
from voxray.platform.errors import DataError

EXAMPLES = """
Examples:

  voxray store ls work/msd_brats.zarr

  voxray store verify work/msd_brats.zarr --sources

  voxray store preview work/msd_brats.zarr BRATS_001 --out brats_001.png --slice 70
"""

StoreArg = Annotated[str, typer.Argument(help="Store path or fsspec URI (s3://…, file://…).")]
store_app = typer.Typer(help="Inspect and check a preprocessed zarr store.", no_args_is_help=True, epilog=EXAMPLES)


@store_app.command("ls")
def ls(store: StoreArg, json_: JsonOpt = False) -> None:
    """List the store's cases from its manifest (ok and failed)."""
    from voxray.preprocessing.store import Store

    s = Store.open(store)
    rows = [{"case": r["case_id"], "status": r["status"], "shape": "×".join(map(str, r["shape"] or [])) or None,
             "spacing": ", ".join(f"{v:.3g}" for v in r["spacing"] or []) or None, "seconds": r["seconds"],
             "error": r["error"]} for r in s.manifest().to_pylist()]
    if json_:
        _output.as_json({"store": store, "layout": s.layout, "channels": list(s.channels), "cases": rows})
        return
    _output.table(rows, title=f"{store}  ({s.layout}, channels {', '.join(s.channels)})")
    _output.result(f"{len(s.case_ids())} ok / {sum(r['status'] != 'ok' for r in rows)} failed")


@store_app.command("verify")
def verify(store: StoreArg,
           sources: Annotated[bool, typer.Option("--sources", help="Also re-hash the source files.")] = False,
           json_: JsonOpt = False) -> None:
    """Check integrity: every ok case readable, checksums and shapes match, fg index valid; exit 4 on problems."""
    from voxray.preprocessing.store.verify import verify_store

    report = verify_store(store, sources=sources)
    if json_:
        _output.as_json({"ok": report.ok, "checked": report.checked, "failed_conversions": report.errors,
                         "uncommitted": report.uncommitted, "problems": report.problems})
    else:
        _output.result(f"{store}: {report.checked} ok cases checked, {report.errors} failed conversions"
                       + (f", {len(report.uncommitted)} uncommitted" if report.uncommitted else ""))
    if not report.ok:
        raise DataError(f"{store}: {len(report.problems)} problem(s):\n  " + "\n  ".join(report.problems[:20]),
                        hint="rerun the preprocess job (with preprocess.overwrite=true to rebuild every case)")
    if not json_:
        _output.result("[green]ok[/]: store verified")


@store_app.command("preview")
def preview(store: StoreArg,
            case: Annotated[str, typer.Argument(help="Case id (see `voxray store ls`).")],
            out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")],
            slice_: Annotated[Optional[int], typer.Option("--slice", help="Axial slice (default: most foreground).")] = None,
            channel: Annotated[int, typer.Option("--channel", help="Channel index to show.")] = 0,
            neurological: Annotated[bool, typer.Option(
                "--neurological", help="Patient's left on the left (default: radiological, right on the left).")
            ] = False) -> None:
    """Write a PNG of one axial slice of a stored case with its label overlaid and R/L/A/P markers."""
    from voxray.preprocessing.store import Store
    from voxray.preprocessing.store.preview import preview_png

    path = preview_png(Store.open(store), case, out, slice_, channel,
                       "neurological" if neurological else "radiological")
    _output.result(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")

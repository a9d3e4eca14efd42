"""`voxray` console script: wiring only. Each command module registers its verbs; `main()` maps errors to exit codes."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from voxray.platform.cli import _output
from voxray.platform.errors import VoxrayError

app = typer.Typer(
    name="voxray",
    help="MRI segmentation on Ray: NIfTI → zarr store → Ray Train/Tune → Ray Serve, each step a job YAML.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

# Command modules; each defines `register(app)`.
COMMANDS = [
    "voxray.platform.cli.jobs",
    "voxray.platform.cli.serve",
    "voxray.platform.cli.store",
    "voxray.platform.cli.demo",
    "voxray.platform.cli.cluster",
    "voxray.platform.cli.data",
    "voxray.platform.cli.models",
    "voxray.platform.cli.export",
    "voxray.platform.cli.plan",
]


def _register() -> None:
    for name in COMMANDS:
        importlib.import_module(name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print a message + hint and exit with the error's code; VOXRAY_DEBUG=1 shows tracebacks."""
    logging.basicConfig(level=os.environ.get("VOXRAY_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    _register()
    debug = os.environ.get("VOXRAY_DEBUG") == "1"
    try:
        app(args=argv, standalone_mode=False)
    except VoxrayError as exc:
        if debug:
            raise
        _output.error(str(exc))
        if exc.hint:
            _output.hint(exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        _output.error("interrupted")
        return 130
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, (click.exceptions.Abort, typer.Abort)):  # click/typer turn these into Abort
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, KeyboardInterrupt):
                _output.error("interrupted")
                return 130
            if isinstance(cause, EOFError):
                _output.error(f"a file or the input ended early (EOFError: {cause or 'no details'})")
                _output.hint("set VOXRAY_DEBUG=1 to see which read failed")
            return 1
        if debug:
            raise
        _output.error(f"{type(exc).__name__}: {exc}")
        _output.hint("set VOXRAY_DEBUG=1 to see the traceback")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

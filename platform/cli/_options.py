"""Reusable CLI option aliases: one spelling per option across commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

JobArg = Annotated[Path, typer.Argument(help="Job spec YAML.", exists=False, dir_okay=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a field: a.b.c=value (repeatable).")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", "-a", help="Ray cluster address (overrides ray.address).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

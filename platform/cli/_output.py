"""All CLI output goes through here: results, tables, errors and hints (stderr for problems)."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Piped output (CI logs, `| tee`) gets a wide console so result tables are not folded into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def result(message: str) -> None:
    console.print(message, highlight=False)


def as_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(rows: Iterable[dict[str, Any]], title: str | None = None, columns: list[str] | None = None) -> None:
    rows = list(rows)
    if not rows:
        result(f"{title}: (none)" if title else "(none)")
        return
    columns = columns or list(rows[0])
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(_fmt(r.get(c)) for c in columns))
    console.print(t)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)


def hint(message: str) -> None:
    err_console.print(f"[yellow]hint:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warning(message: str) -> None:
    """One warning line on stderr (kept on one line: scripts grep for it)."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

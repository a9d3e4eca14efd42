"""`${NAME}` in job specs: the one interpolator (the loader and cluster submission both use it) and the redaction
that keeps the values out of everything voxray writes.

A spec may reference environment variables for secrets only (DESIGN). Values are substituted before validation so
every field type works, so the validated job holds them; every writer — resolved specs, `result.json`, MLflow
params, log records, CLI tables — passes its text through `redact`, which turns each value back into `${NAME}`.
Reloading such a file under the same environment gives the same job, so reproducibility is kept.

Which names are secrets travels by name only: this process remembers the names it interpolated, and
`runtime_env_vars()` hands them to Ray workers as `VOXRAY_SECRET_ENV`, where the values come from the worker's own
environment (inherited from the driver for an embedded Ray, `--env-var` for a cluster job).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable

from voxray.platform.errors import SpecError

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAMES_VAR = "VOXRAY_SECRET_ENV"
_seen: set[str] = set()
_log_factory_installed = False


def interpolate(value: Any, source: str, path: str = "", *, unset: Callable[[str], str] | None = None) -> Any:
    """Replace `${NAME}` in every string of a raw spec by the environment's value; an unset variable is a
    SpecError naming the field, or `unset(NAME)` when given (cluster submission validates with placeholders)."""
    if isinstance(value, dict):
        return {k: interpolate(v, source, f"{path}.{k}" if path else str(k), unset=unset) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, source, f"{path}[{i}]", unset=unset) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    names = ENV_REF.findall(value)
    if not names:
        return value
    missing = [n for n in names if n not in os.environ]
    if missing and unset is None:
        raise SpecError(source, [f"{path or '(top level)'}: environment variable ${{{missing[0]}}} is not set"])
    _remember(n for n in names if n in os.environ)
    return ENV_REF.sub(lambda m: os.environ[m.group(1)] if m.group(1) in os.environ else unset(m.group(1)), value)


def _remember(names: Any) -> None:
    new = set(names) - _seen
    if new:
        _seen.update(new)
        _install_log_redaction()


def secret_names() -> list[str]:
    """Names interpolated in this process, plus those a driver passed down in VOXRAY_SECRET_ENV."""
    passed = {n for n in os.environ.get(NAMES_VAR, "").split(",") if n}
    return sorted(_seen | passed)


def runtime_env_vars() -> dict[str, str]:
    """Env vars for Ray workers so they redact the same names (names only, never values)."""
    names = secret_names()
    return {NAMES_VAR: ",".join(names)} if names else {}


def redact(value: Any) -> Any:
    """`value` (str, or dicts/lists of them) with every secret's value replaced by `${NAME}`."""
    pairs = sorted(((os.environ.get(n, ""), n) for n in secret_names()), key=lambda p: -len(p[0]))
    pairs = [(v, n) for v, n in pairs if v]
    return _redact(value, pairs) if pairs else value


def _redact(value: Any, pairs: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        for secret, name in pairs:
            value = value.replace(secret, f"${{{name}}}")
        return value
    if isinstance(value, dict):
        return {_redact(k, pairs): _redact(v, pairs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(v, pairs) for v in value)
    return value


def _install_log_redaction() -> None:
    """Redact every log record this process creates, whatever handler writes it (installed once, on the first
    secret): a record factory sees the message before any handler, pytest's and Ray's included."""
    global _log_factory_installed
    if _log_factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's problem, not ours
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(factory)
    _log_factory_installed = True

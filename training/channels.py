"""Match user-supplied modality names to a model's channels (case-insensitive, common aliases).

Uploads and CLI inputs name their files `flair`, `T1Gd`, `t1ce`, `t2f` …; model cards carry the dataset adapter's
names (MSD: FLAIR, T1w, t1gd, T2w; BraTS 2023: t1n, t1c, t2w, t2f). Both sides are reduced to a canonical key so
`t1ce` finds `t1gd` and `t2f` finds `FLAIR`.
"""

from __future__ import annotations

import re

from voxray.platform.errors import DataError

_ALIASES: tuple[tuple[str, ...], ...] = (
    ("t1ce", "t1gd", "t1c", "t1post", "t1contrast", "t1wce", "t1gad", "t1cgd"),
    ("flair", "t2flair", "t2f", "t2wflair"),
    ("t1", "t1w", "t1n", "t1native", "t1pre"),
    ("t2", "t2w"),
    ("dwi", "trace", "diffusion"),
    ("adc",),
    ("ct",),
)
_CANON = {alias: group[0] for group in _ALIASES for alias in group}


class ChannelMismatch(DataError):
    """The given modalities do not name exactly the model's channels."""


def canonical(name: str) -> str:
    """Canonical key of a modality name: lower case, alphanumerics only, aliases folded (`T1-Gd` → `t1ce`)."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return _CANON.get(key, key)


def match_channels(given: list[str] | tuple[str, ...], expected: list[str] | tuple[str, ...]) -> list[str]:
    """The `given` names reordered to follow `expected` (one given name per expected channel, no extras).

    Raises ChannelMismatch naming what is missing, unknown or duplicated, and the names the model expects.
    """
    want = {canonical(e): e for e in expected}
    if len(want) != len(expected):
        raise ValueError(f"model channels {list(expected)} are ambiguous after alias folding")
    seen: dict[str, str] = {}
    unknown: list[str] = []
    for g in given:
        key = canonical(g)
        if key not in want:
            unknown.append(g)
        elif key in seen:
            raise ChannelMismatch(f"modalities {seen[key]!r} and {g!r} both name channel {want[key]!r}")
        else:
            seen[key] = g
    missing = [want[k] for k in want if k not in seen]
    if unknown or missing:
        parts = ([f"unknown {unknown}"] if unknown else []) + ([f"missing {missing}"] if missing else [])
        raise ChannelMismatch(f"modalities do not match the model's channels: {', '.join(parts)}; "
                              f"expected exactly {list(expected)} (case-insensitive; aliases such as t1ce/t1gd work)")
    return [seen[canonical(e)] for e in expected]

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


def channel_from_filename(path: str, channels: list[str] | tuple[str, ...]) -> str | None:
    """The model channel a file name names (`BraTS_001_t1ce.nii.gz` → the `t1gd` channel), or None."""
    stem = re.sub(r"\.nii(\.gz)?$", "", path.replace("\\", "/").rsplit("/", 1)[-1].lower())
    tokens = [canonical(t) for t in re.split(r"[_\-. ]+", stem) if t]
    hits = [c for c in channels if canonical(c) in tokens]
    if len(hits) == 1:
        return hits[0]
    # the last token decides ties such as t1 vs t1ce both being present in a stem
    return next((c for c in channels if tokens and canonical(c) == tokens[-1]), None)


def name_inputs(inputs: list[str], channels: list[str] | tuple[str, ...]) -> dict[str, str] | str:
    """CLI `--input` values → {channel: path} or one path (a 4D image, or 3D for a one-channel model).

    Each value is `name=path` or a path whose file name names a channel (`…_flair.nii.gz`).
    """
    if len(inputs) == 1 and "=" not in inputs[0]:
        return inputs[0]
    named: dict[str, str] = {}
    for value in inputs:
        name, sep, path = value.partition("=")
        if not sep:
            path, name = value, channel_from_filename(value, channels) or ""
            if not name:
                raise ChannelMismatch(f"cannot tell which channel {value!r} is; write it as <channel>=<path> "
                                      f"with a channel of {list(channels)}")
        if name in named:
            raise ChannelMismatch(f"channel {name!r} given twice")
        named[name] = path
    return named

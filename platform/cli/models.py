"""`voxray models`: list the model zoo, or build one model and print its parameters, GFLOPs and output shapes."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from voxray.platform.cli import _output
from voxray.platform.cli._options import JsonOpt, SetOpt
from voxray.platform.errors import SpecError

MODELS_EXAMPLES = """
Examples:

  voxray models

  voxray models show swin_factorizer --in-channels 4 --out-channels 3 --patch 128 128 128

  voxray models show swin_factorizer --set window=4 --set head_dim=4 --set mlp_ratio=4 --in-channels 2 --out-channels 1 --patch 64 64 64 --json

  voxray models show unet_depth --set depth=5 --patch 256 256

  voxray models registry registry/          (exported models, with the model or file each was fine-tuned from)
"""

models_app = typer.Typer(help="The model zoo: list names, or build one and show its size and cost.",
                         epilog=MODELS_EXAMPLES, no_args_is_help=False, invoke_without_command=True)


def _spec(name: str, overrides: list[str] | None):
    """`{name: NAME}` + `--set key=value` overrides → validated ModelSpec; errors name `train.model.<key>`."""
    from pydantic import TypeAdapter, ValidationError

    from voxray.platform.specs.loader import apply_overrides, format_errors
    from voxray.platform.specs.models import ModelSpec
    from voxray.training.models import REGISTRY

    if name not in REGISTRY:
        raise SpecError("", [f"train.model.name: unknown model {name!r} (choose from {', '.join(REGISTRY)})"],
                        hint="`voxray models` lists the registry")
    data = apply_overrides({"name": name}, overrides or [], source="--set")
    try:
        return TypeAdapter(ModelSpec).validate_python(data)
    except ValidationError as exc:
        problems = [_model_path(line, name) for line in format_errors(exc)]
        raise SpecError("--set", problems, hint=f"`voxray schema` lists the fields of {name}") from None


def _model_path(line: str, name: str) -> str:
    """Re-root a pydantic error line at `train.model` (drop the union's tag `name`)."""
    for tag in (f"{name}.", f"{name}:"):
        if line.startswith(tag):
            return f"train.model{'.' if tag.endswith('.') else ':'}{line[len(tag):]}"
    return f"train.model.{line}"


@models_app.callback()
def models(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """List the registry: name, supported spatial dims, description."""
    if ctx.invoked_subcommand is not None:
        return
    from voxray.training.models import list_models

    rows = list_models()
    if json_:
        _output.as_json(rows)
        return
    _output.table([{**r, "dims": "/".join(f"{d}D" for d in r["dims"])} for r in rows], title="models")


def _patch(first: Optional[str], extra: list[str]) -> tuple[int, ...] | None:
    """`--patch 64 64 64` (click options take one value: the rest arrive as extra args) or `--patch 64,64,64`."""
    if first is None:
        if extra:
            raise SpecError("", [f"unexpected arguments {extra} (sizes belong after --patch)"])
        return None
    parts = first.replace(",", " ").split() + list(extra)
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise SpecError("", [f"train.patch: {parts} must be 2 or 3 integers, e.g. --patch 64 64 64"]) from None
    if len(size) not in (2, 3) or min(size) < 1:
        raise SpecError("", [f"train.patch: {list(size)} must be 2 or 3 positive integers, e.g. --patch 64 64 64"])
    return size


@models_app.command("show", epilog=MODELS_EXAMPLES, context_settings={"allow_extra_args": True})
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registry name (see `voxray models`).")],
    set_: SetOpt = None,
    in_channels: Annotated[int, typer.Option("--in-channels", help="Input channels.")] = 1,
    out_channels: Annotated[int, typer.Option("--out-channels", help="Output channels.")] = 2,
    patch: Annotated[Optional[str], typer.Option("--patch", help="Patch size, 2 or 3 numbers: --patch 64 64 64 "
                                                 "(default: the model's usual patch).", show_default=False)] = None,
    json_: JsonOpt = False,
) -> None:
    """Build one model from its spec and print parameters, forward GFLOPs at the patch and output shapes."""
    from voxray.training.models import build_model, default_patch, model_constraints
    from voxray.training.models.profile import count_params, forward_profile

    spec = _spec(name, set_)
    size = _patch(patch, ctx.args) or default_patch(name)
    model = build_model(spec, in_channels=in_channels, out_channels=out_channels, spatial_dims=len(size), patch=size)
    info = {"name": name, "spec": spec.model_dump(), "in_channels": in_channels, "out_channels": out_channels,
            "patch": list(size), "params": count_params(model), **forward_profile(model, in_channels, size),
            "constraints": model_constraints(spec, len(size), size)}
    if json_:
        _output.as_json(info)
        return
    _output.table([{"item": k, "value": info[k]} for k in
                   ("name", "patch", "in_channels", "out_channels", "params", "gflops", "outputs", "constraints")],
                  title=f"model {name}")


def lineage_text(lineage: dict | None) -> str:
    """One line for a card's lineage: the parent registry model and version, or the weights file and its sha256."""
    if not lineage:
        return "(from scratch)"
    if lineage.get("source") == "registry":
        return f"{lineage.get('name')} v{lineage.get('version')}"
    where = f"{lineage.get('source')} {lineage.get('path')}"
    if lineage.get("format") not in (None, "voxray"):
        where += f" ({lineage['format']})"
    return f"{where} sha256:{str(lineage.get('sha256'))[:12]}"


@models_app.command("registry", epilog=MODELS_EXAMPLES)
def registry(
    root: Annotated[str, typer.Argument(help="Registry root, or one <root>/<name>.")] = "registry",
    json_: JsonOpt = False,
) -> None:
    """List exported models: name, version, task, channels, validation Dice and lineage (what each started from)."""
    from voxray.training.registry import list_entries

    cards = list_entries(root)
    if json_:
        _output.as_json([{k: c.get(k) for k in ("name", "version", "created", "task", "channels", "metrics",
                                                 "lineage", "path")} for c in cards])
        return
    rows = [{"name": c["name"], "version": c["version"], "task": c["task"], "channels": ", ".join(c["channels"]),
             "val/dice_mean": (c.get("metrics") or {}).get("val/dice_mean"),
             "started from": lineage_text(c.get("lineage"))} for c in cards]
    _output.table(rows, title=f"registry {root}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")

"""Official (paper-era) Factorizer state_dicts ↔ voxray's SwinFactorizer: the name map and reshape rules.

No official code is used. `official_layout` below writes down, for a toy configuration, the key names and shapes the
official `SegmentationFactorizer` (pashtari/factorizer, commit fa7f03d: factorizer/unet.py, factorizer/factorizer.py,
factorizer/layers/{linear,norm,mlp}.py, factorization/matrix_factorizations.py `RandomInit`) registers — the layout
docs/finetuning.md documents — independently of `to_voxray`'s regexes, and fills them with deterministic values.
"""

from __future__ import annotations

import pytest
import torch

from voxray.training.models.factorizer import SwinFactorizer
from voxray.training.models.factorizer_official import OfficialLayoutError, to_official, to_voxray

TOY = dict(in_ch=4, out_ch=3, widths=(8, 16, 32, 64), head_dim=4, window=2, ratio=2, size=(16, 16, 16))


def _block(prefix: str, c_in: int, c: int, cfg: dict, pos: tuple | None) -> dict[str, tuple]:
    """One FactorizerBlock: [adapter Linear(no bias)], [PosEmbed], Residual(Sequential(LayerNorm, sub-block)) × 2."""
    r, d, p = cfg["ratio"], cfg["head_dim"], cfg["window"] ** len(cfg["size"])
    keys: dict[str, tuple] = {}
    if c_in != c:
        keys[f"{prefix}adapter.0.linear.weight"] = (c, c_in, 1)
    if pos is not None:
        keys[f"{prefix}pos_embed.pos"] = (1, c, *pos)
    nmf, mlp = f"{prefix}blocks.nmf.fn.", f"{prefix}blocks.mlp.fn."
    keys.update({f"{nmf}0.norm.weight": (c,), f"{nmf}0.norm.bias": (c,),
                 f"{nmf}1.in_proj.linear.weight": (c, c, 1),
                 f"{nmf}1.factorize.init.u0": (d, 1), f"{nmf}1.factorize.init.v0": (p, 1),
                 f"{nmf}1.out_proj.linear.weight": (c, c, 1), f"{nmf}1.out_proj.linear.bias": (c,),
                 f"{mlp}0.norm.weight": (c,), f"{mlp}0.norm.bias": (c,),
                 f"{mlp}1.block.0.linear.weight": (r * c, c, 1), f"{mlp}1.block.0.linear.bias": (r * c,),
                 f"{mlp}1.block.3.linear.weight": (c, r * c, 1), f"{mlp}1.block.3.linear.bias": (c,)})
    return keys


def official_layout(cfg: dict, depth: int = 1) -> dict[str, tuple]:
    """Key → shape of the official SegmentationFactorizer (strides 1,2,2,…, 3 deep-supervision heads)."""
    w, n, k = cfg["widths"], len(cfg["size"]), (2,) * len(cfg["size"])
    bottom = tuple(s // 2 ** (len(w) - 1) for s in cfg["size"])
    keys = {"stem.weight": (w[0], cfg["in_ch"], *(3,) * n)}
    for i, c in enumerate(w):  # UNetEncoderBlock i: [downsample conv], then `depth` blocks
        first = 0
        if i > 0:
            keys[f"encoder.blocks.{i}.blocks.0.weight"] = (c, w[i - 1], *k)
            first = 1
        for b in range(depth):
            pos = bottom if (i == len(w) - 1 and b == 0) else None
            keys.update(_block(f"encoder.blocks.{i}.blocks.{first + b}.", c, c, cfg, pos))
    for j, c in enumerate(reversed(w[:-1])):  # UNetDecoderBlock j: deepest first
        keys[f"decoder.blocks.{j}.upsample.weight"] = (2 * c, c, *k)
        keys[f"decoder.blocks.{j}.upsample.bias"] = (c,)
        for b in range(depth):
            keys.update(_block(f"decoder.blocks.{j}.blocks.{b}.", 2 * c if b == 0 else c, c, cfg, None))
    for j in range(3):
        keys[f"heads.{j}.weight"] = (cfg["out_ch"], w[j], *(1,) * n)
        keys[f"heads.{j}.bias"] = (cfg["out_ch"],)
    return keys


def official_state(cfg: dict, depth: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=g) for key, shape in official_layout(cfg, depth).items()}


def _voxray(cfg: dict, depth: int = 1) -> SwinFactorizer:
    return SwinFactorizer(spatial_dims=len(cfg["size"]), in_channels=cfg["in_ch"], out_channels=cfg["out_ch"],
                          spatial_size=cfg["size"], widths=cfg["widths"], blocks=depth, head_dim=cfg["head_dim"],
                          window=cfg["window"], mlp_ratio=cfg["ratio"])


@pytest.mark.parametrize("cfg, depth", [(TOY, 1), (TOY, 2), ({**TOY, "size": (32, 16), "ratio": 4}, 1)],
                         ids=["3d", "3d-2-blocks", "2d-mlp4"])
def test_round_trip_official_to_voxray_and_back(cfg, depth):
    official = official_state(cfg, depth)
    mapped = to_voxray(official)
    model = _voxray(cfg, depth)
    model.load_state_dict(mapped, strict=True)  # every voxray weight filled, nothing left over, shapes right
    assert len(mapped) == len(official) == len(model.state_dict())
    back = to_official(model.state_dict())
    assert back.keys() == official.keys()
    assert all(torch.equal(back[k], official[k]) for k in official)


def test_the_orders_that_differ_are_mapped_explicitly():
    """Downsampling convs leave the encoder blocks, the decoder turns shallow-first, Conv1d becomes pointwise ConvNd."""
    o = official_state(TOY)
    v = to_voxray(o)
    assert torch.equal(v["down.0.weight"], o["encoder.blocks.1.blocks.0.weight"])
    assert torch.equal(v["encoder.1.0.norm1.weight"], o["encoder.blocks.1.blocks.1.blocks.nmf.fn.0.norm.weight"])
    assert torch.equal(v["encoder.0.0.norm1.weight"], o["encoder.blocks.0.blocks.0.blocks.nmf.fn.0.norm.weight"])
    assert torch.equal(v["encoder.3.0.pos_embed"], o["encoder.blocks.3.blocks.1.pos_embed.pos"])
    assert torch.equal(v["up.2.weight"], o["decoder.blocks.0.upsample.weight"])  # deepest decoder level
    assert torch.equal(v["decoder.0.0.adapter.0.weight"].flatten(1),
                       o["decoder.blocks.2.blocks.0.adapter.0.linear.weight"].flatten(1))
    assert v["encoder.2.0.mlp.net.0.weight"].shape == (64, 32, 1, 1, 1)
    assert torch.equal(v["encoder.2.0.mixer.nmf.v0"], o["encoder.blocks.2.blocks.1.blocks.nmf.fn.1.factorize.init.v0"])


def test_lightning_checkpoint_prefix_and_unknown_layouts():
    o = official_state(TOY)
    ckpt = {f"net.{k}": t for k, t in o.items()} | {"loss.weight": torch.ones(1)}  # other modules' keys dropped
    assert to_voxray(ckpt).keys() == to_voxray(o).keys()
    performer = dict(o)
    performer["encoder.blocks.0.blocks.0.blocks.nmf.fn.1.attn.to_q.weight"] = torch.zeros(8, 8)
    with pytest.raises(OfficialLayoutError, match="attn.to_q"):
        to_voxray(performer)
    bad = dict(o)
    bad["encoder.blocks.0.blocks.0.blocks.mlp.fn.1.block.0.linear.weight"] = torch.zeros(16, 8, 3)
    with pytest.raises(OfficialLayoutError, match=r"Conv1d weight \(out, in, 1\)"):
        to_voxray(bad)


def test_a_lightning_ckpt_file_through_train_init(tmp_path):
    """An official Lightning .ckpt (state_dict under `net.`, pickled hyper-parameters) loads through `train.init`
    with format factorizer_official: the run's network gets exactly the official weights."""
    from voxray.platform.specs.train import TrainSpec
    from voxray.training.init import init_weights

    o = official_state(TOY, seed=3)
    path = tmp_path / "epoch=515-step=99999.ckpt"
    torch.save({"state_dict": {f"net.{k}": t for k, t in o.items()}, "global_step": 99999,
                "hyper_parameters": {"network": SwinFactorizer}}, path)
    spec = TrainSpec(store="unused", task="brats_regions", patch=[16, 16, 16],
                     model={"name": "swin_factorizer", "widths": [8, 16, 32, 64], "window": 2, "head_dim": 4},
                     init={"path": str(path), "format": "factorizer_official", "allow_pickle": True})
    meta = {"labels": {0: "background", 1: "edema", 2: "necrosis", 3: "enhancing"},
            "regions": {"ET": [3], "TC": [2, 3], "WT": [1, 2, 3]}}
    store = type("Store", (), {"channels": ("flair", "t1", "t1gd", "t2")})()
    model = _voxray(TOY)
    lineage = init_weights({"spec": spec, "model": model, "store": store, "meta": meta, "chans": None})
    assert lineage["format"] == "factorizer_official" and lineage["loaded"] == len(o)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in to_voxray(o).items())

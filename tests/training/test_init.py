"""`train.init`: the three sources (registry entry, checkpoint folder, weights file), strictness, the head and
channel policies, encoder freezing, and the lineage in the model card and `voxray models registry`."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
import torch
import yaml

import voxray.training.loop as loop
from voxray.platform.errors import SpecError
from voxray.platform.specs.train import TrainSpec
from voxray.training.checkpoint import load_state, save_state
from voxray.training.init import io_keys
from voxray.training.registry import export_model

from _train_helpers import MSD_META, make_fake_store

UNET = {"name": "unet", "channels": [8, 16], "num_res_units": 1}
MSD_CHANNELS = MSD_META["channels"]  # FLAIR, T1w, t1gd, T2w
INPUT_KEY = "model.0.conv.unit0.conv.weight"  # first conv of the MONAI UNet: (8, in, 3, 3, 3)


def _spec(init=None, **kw) -> TrainSpec:
    base = dict(store="unused", task="brats_regions", model=UNET, patch=[16, 16, 16], batch_size=2, steps=4,
                optimizer={"lr": 3e-3, "weight_decay": 0.0}, schedule={"name": "constant"},
                validation={"mode": "none"}, checkpoint={"every": 2}, tracking={"mlflow": False},
                augment={"enabled": False}, sampling={"loader_workers": 0, "fg_fraction": 0.5}, init=init)
    base.update(kw)
    return TrainSpec(**base)


def _parent(channels: int = 4, outputs: int = 3, model=UNET) -> torch.nn.Module:
    torch.manual_seed(123)
    return loop.build_network(_spec(model=model), in_channels=channels, out_channels=outputs)


def _card(**kw) -> dict:
    card = {"model": {**UNET}, "spatial_dims": 3, "patch": [16, 16, 16], "in_channels": 4,
            "channels": list(MSD_CHANNELS), "out_channels": 3, "task": "brats_regions",
            "labels": MSD_META["labels"], "regions": MSD_META["regions"], "metrics": {"val/dice_mean": 0.7}}
    card.update(kw)
    return card


@pytest.fixture
def registry(tmp_path):
    """<tmp>/registry/brats-parent/{1,2}: version 2 holds `_parent()`'s weights."""
    root = tmp_path / "registry"
    export_model(_parent(), _card(), root, "brats-parent")
    export_model(_parent(), _card(), root, "brats-parent")
    return root


def _run(spec: TrainSpec, run_dir, store) -> dict:
    loop.open_store = lambda uri: store  # restored by the autouse fixture below
    return loop.train_loop({"train": spec.model_dump(mode="json"), "name": "ft", "run_dir": str(run_dir)})


@pytest.fixture(autouse=True)
def _restore_open_store(monkeypatch):
    monkeypatch.setattr(loop, "open_store", loop.open_store)


def _init_model(spec: TrainSpec, store, *, channels: int = 4, outputs: int = 3) -> tuple[torch.nn.Module, dict]:
    """A fresh network of `spec` initialised by `train.init` exactly as the loop does it."""
    from voxray.training.data import channel_indices
    from voxray.training.init import init_weights

    torch.manual_seed(7)
    model = loop.build_network(spec, in_channels=channels, out_channels=outputs)
    env = {"spec": spec, "model": model, "store": store, "meta": store.metadata(), "rank": 0,
           "chans": channel_indices(store.channels, spec.channels)}
    return model, init_weights(env)


def _same(a: torch.nn.Module, b: torch.nn.Module, keys) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in keys)


# ------------------------------------------------------------------------------------------------ the sources

def test_registry_entry_by_name_and_version(registry):
    store, parent = make_fake_store(2), _parent()
    latest, lin = _init_model(_spec({"model": "brats-parent", "registry": str(registry)}), store)
    assert _same(latest, parent, parent.state_dict()) and lin["name"] == "brats-parent" and lin["version"] == 2
    weights = registry / "brats-parent" / "2" / "model.safetensors"
    assert lin["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest() and lin["loaded"] == lin["of"]
    _, lin1 = _init_model(_spec({"path": str(registry / "brats-parent" / "1")}), store)
    assert (lin1["source"], lin1["version"]) == ("registry", 1)
    with pytest.raises(SpecError, match="not in the registry"):
        _init_model(_spec({"model": "no-such-model", "registry": str(registry)}), store)


def test_checkpoint_folder_and_weights_files(tmp_path):
    store, parent = make_fake_store(2), _parent()
    save_state({"model": parent.state_dict(), "step": 7}, tmp_path / "ckpt", {})
    model, lin = _init_model(_spec({"path": str(tmp_path / "ckpt")}), store)
    assert _same(model, parent, parent.state_dict()) and (lin["source"], lin["step"]) == ("checkpoint", 7)
    torch.save(parent.state_dict(), tmp_path / "w.pt")
    from safetensors.torch import save_file

    save_file(parent.state_dict(), str(tmp_path / "w.safetensors"))
    for name in ("w.pt", "w.safetensors"):
        model, lin = _init_model(_spec({"path": str(tmp_path / name)}), store)
        assert _same(model, parent, parent.state_dict()), name
        assert lin["sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert (lin["source"], lin["format"], "notes" in lin) == ("file", "voxray", True)  # head kept: no card


def test_pickled_files_need_allow_pickle(tmp_path):
    """A Lightning-style file with a class in its hyper-parameters is refused by the safe loader unless allowed."""
    store, parent = make_fake_store(2), _parent()
    torch.save({"state_dict": parent.state_dict(), "hyper_parameters": {"net": torch.nn.Conv3d}}, tmp_path / "x.ckpt")
    with pytest.raises(SpecError, match="allow_pickle"):
        _init_model(_spec({"path": str(tmp_path / "x.ckpt")}), store)
    model, _ = _init_model(_spec({"path": str(tmp_path / "x.ckpt"), "allow_pickle": True}), store)
    assert _same(model, parent, parent.state_dict())


def test_spec_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        _spec({"model": "a", "path": "/x"})
    with pytest.raises(ValueError, match="exactly one"):
        _spec({})
    with pytest.raises(ValueError, match="weights file"):
        _spec({"model": "a", "format": "factorizer_official"})


# ------------------------------------------------------------------------------------------ strict and policies

def test_strict_names_the_mismatching_weights(registry):
    store = make_fake_store(2)
    wider = _spec({"model": "brats-parent", "registry": str(registry)},
                  model={"name": "unet", "channels": [8, 32], "num_res_units": 1})
    with pytest.raises(SpecError, match=r"model\.1\.submodule.*source .* vs model") as err:
        _init_model(wider, store)
    assert "strict: false" in (err.value.hint or "")
    loose = wider.model_copy(update={"init": wider.init.model_copy(update={"strict": False})})
    model, lin = _init_model(loose, store)
    assert 0 < lin["loaded"] < lin["of"]  # what matched (the first layer) is loaded, the rest stays random
    assert torch.equal(model.state_dict()["model.0.conv.unit0.conv.bias"],
                       _parent().state_dict()["model.0.conv.unit0.conv.bias"])


def test_io_keys_found_by_probing_the_architecture():
    inputs, heads = io_keys(_spec())
    assert inputs == {INPUT_KEY: [1], "model.0.residual.weight": [1]}
    assert "model.2.0.conv.weight" in heads and "model.2.0.conv.bias" in heads


def test_new_head_when_the_outputs_differ(registry, caplog):
    """3 BraTS regions → 1 binary lesion output: an error unless new_head; then the head stays freshly initialised
    (named in the log and the lineage) and every other weight is the parent's."""
    store = make_fake_store(2)
    init = {"model": "brats-parent", "registry": str(registry)}
    with pytest.raises(SpecError, match="new_head"):
        _init_model(_spec(init, task="binary"), store, outputs=1)
    with caplog.at_level(logging.INFO, logger="voxray.training.init"):
        model, lin = _init_model(_spec({**init, "new_head": True}, task="binary"), store, outputs=1)
    _, heads = io_keys(_spec(task="binary"))
    assert lin["new_head"] == sorted(heads) and "re-initialised" in caplog.text and "model.2.0.conv.bias" in caplog.text
    parent, body = _parent(), [k for k in model.state_dict() if k not in heads]
    assert _same(model, parent, body)
    torch.manual_seed(7)
    fresh = loop.build_network(_spec(task="binary"), in_channels=4, out_channels=1)
    assert _same(model, fresh, heads)


def test_head_kept_by_output_names_across_label_conventions(registry):
    """BraTS 2023 numbers its labels differently (1 NCR, 2 ED, 3 ET) but its regions are the same ET/TC/WT: the
    head is kept. A store with only WT gets the parent's WT row of the head."""
    b23 = {**MSD_META, "layout": "brats2023", "labels": {0: "background", 1: "NCR", 2: "ED", 3: "ET"},
           "regions": {"ET": [3], "TC": [1, 3], "WT": [1, 2, 3]}}
    store = make_fake_store(2)
    store.meta = b23
    init = {"model": "brats-parent", "registry": str(registry)}
    model, lin = _init_model(_spec(init), store)
    parent = _parent()
    assert _same(model, parent, parent.state_dict()) and "new_head" not in lin
    store.meta = {**b23, "regions": {"WT": [1, 2, 3]}}
    model, lin = _init_model(_spec(init), store, outputs=1)
    bias = model.state_dict()["model.2.1.conv.unit0.conv.bias"]
    assert torch.equal(bias, parent.state_dict()["model.2.1.conv.unit0.conv.bias"][2:3])
    assert any("selected by name" in n for n in lin["notes"])
    store.meta = {**MSD_META, "labels": {0: "background", 1: "infarct"}, "regions": None}  # ISLES-like, binary
    model, lin = _init_model(_spec({**init, "output_map": {"infarct": "WT"}}, task="binary"), store, outputs=1)
    assert torch.equal(model.state_dict()["model.2.1.conv.unit0.conv.bias"], bias) and "new_head" not in lin


def test_new_channels_copy_by_name_map_or_mean(registry):
    """A 2-channel job [T2w, dwi]: T2w copies the parent's T2w weights, dwi the mean of the four (or FLAIR's with
    channel_map); an error without a policy."""
    store = make_fake_store(2, channels=4)
    store.channels = ("T2w", "dwi", "FLAIR", "t1gd")
    init = {"model": "brats-parent", "registry": str(registry)}
    job = dict(channels=["T2w", "dwi"])
    with pytest.raises(SpecError, match="not in the source"):
        _init_model(_spec(init, **job), store, channels=2)
    w = _parent().state_dict()[INPUT_KEY]
    model, lin = _init_model(_spec({**init, "new_channels": "mean"}, **job), store, channels=2)
    got = model.state_dict()[INPUT_KEY]
    assert torch.equal(got[:, 0], w[:, 3]) and torch.allclose(got[:, 1], w.mean(dim=1))
    assert any("'dwi'" in n and "mean" in n for n in lin["notes"])
    assert any("not used" in n and "t1gd" in n for n in lin["notes"])
    model, _ = _init_model(_spec({**init, "channel_map": {"DWI": "FLAIR"}}, **job), store, channels=2)
    assert torch.equal(model.state_dict()[INPUT_KEY][:, 1], w[:, 0])


def test_source_channels_name_a_cardless_source(tmp_path):
    store, parent = make_fake_store(2), _parent()
    store.channels = ("t1gd", "FLAIR", "x", "y")
    torch.save(parent.state_dict(), tmp_path / "w.pt")
    job = dict(channels=["t1gd", "FLAIR"])
    with pytest.raises(SpecError, match="source_channels"):
        _init_model(_spec({"path": str(tmp_path / "w.pt")}, **job), store, channels=2)
    model, _ = _init_model(_spec({"path": str(tmp_path / "w.pt"), "source_channels": MSD_CHANNELS}, **job),
                           store, channels=2)
    w = parent.state_dict()[INPUT_KEY]
    assert torch.equal(model.state_dict()[INPUT_KEY], w[:, [2, 0]])


# ----------------------------------------------------------------------------- freezing, lineage, registry CLI

def test_encoder_frozen_for_n_steps_then_trained_and_lineage_in_checkpoints(registry, tmp_path):
    store = make_fake_store(4, shape=(16, 16, 16))
    init = {"model": "brats-parent", "registry": str(registry), "freeze_encoder_steps": 2}
    from voxray.training.init import encoder_parameters

    parent = _parent()
    encoder = encoder_parameters(parent, _spec())
    assert "model.0.conv.unit0.conv.weight" in encoder and "model.1.submodule.conv.unit0.conv.weight" in encoder
    assert not any(k.startswith("model.2.") for k in encoder)
    _run(_spec(init, steps=2), tmp_path, store)
    at2 = load_state(tmp_path / "checkpoints" / "step_0000002")
    ps = parent.state_dict()
    assert all(torch.equal(at2["model"][k], ps[k]) for k in encoder)
    assert not torch.equal(at2["model"]["model.2.0.conv.weight"], ps["model.2.0.conv.weight"])
    assert at2["lineage"]["name"] == "brats-parent" and at2["lineage"]["freeze_encoder_steps"] == 2
    _run(_spec(init, steps=4), tmp_path, store)  # resumed: the frozen window is over, the encoder now learns
    at4 = load_state(tmp_path / "checkpoints" / "step_0000004")
    assert not all(torch.equal(at4["model"][k], ps[k]) for k in encoder)
    assert at4["lineage"] == at2["lineage"]  # kept across the resume (train.init is not applied again)


def test_lineage_in_the_card_and_the_registry_listing(registry, tmp_path, capsys):
    from voxray.platform.cli.app import main
    from voxray.training.export import export_checkpoint

    store = make_fake_store(4, shape=(16, 16, 16))
    spec = _spec({"model": "brats-parent", "registry": str(registry)}, steps=2, registry=str(registry))
    _run(spec, tmp_path / "run", store)
    out = export_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000002", spec, store, name="brats-ft",
                            registry_root=str(registry), metrics={"val/dice_mean": 0.5}, source={"job": "ft"})
    card = yaml.safe_load((out / "model.yaml").read_text())
    assert (card["lineage"]["name"], card["lineage"]["version"]) == ("brats-parent", 2)
    assert yaml.safe_load((registry / "brats-parent" / "1" / "model.yaml").read_text())["lineage"] is None
    assert main(["models", "registry", str(registry), "--json"]) == 0
    rows = {(r["name"], r["version"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("brats-ft", 1)]["lineage"]["sha256"] == card["lineage"]["sha256"]
    assert main(["models", "registry", str(registry)]) == 0
    text = capsys.readouterr().out
    assert "brats-parent v2" in text and "(from scratch)" in text

"""Largest-component postprocessing: kept per output only where validation Dice improves, recorded in the card at
export, applied by `Predictor` exactly as the card says."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from voxray.platform.specs.train import TrainSpec
from voxray.training import tasks
from voxray.training.postprocess import apply_largest_component, decide, largest_component

from _infer_helpers import train_helpers

NAMES = ["background", "edema", "tumour"]


def _blobs(shape=(20, 20, 20), big=((2, 10), (2, 10), (2, 10)), small=((14, 16), (14, 16), (14, 16))):
    big_m, small_m = np.zeros(shape, bool), np.zeros(shape, bool)
    big_m[tuple(slice(*b) for b in big)] = True
    small_m[tuple(slice(*s) for s in small)] = True
    return big_m, small_m


def _softmax_logits(on_class1: np.ndarray) -> torch.Tensor:
    logits = torch.zeros(3, *on_class1.shape)
    logits[0] = 2.0
    logits[1, torch.from_numpy(on_class1)] = 5.0
    return logits


def test_largest_component_and_its_application():
    big, small = _blobs()
    assert np.array_equal(largest_component(big | small), big) and np.array_equal(largest_component(big), big)
    out = apply_largest_component(_softmax_logits(big | small), "labels", NAMES, ["edema"])
    assert np.array_equal(out.argmax(0).numpy() == 1, big) and (out.argmax(0)[torch.from_numpy(small)] == 0).all()
    sig = torch.full((2, 20, 20, 20), -3.0)
    sig[0, torch.from_numpy(big | small)] = 3.0
    sig[1, torch.from_numpy(small)] = 3.0
    kept = apply_largest_component(sig, "brats_regions", ["TC", "WT"], ["TC"])
    assert np.array_equal((kept[0] > 0).numpy(), big) and np.array_equal((kept[1] > 0).numpy(), small)


def test_kept_only_where_validation_dice_improves():
    big, small = _blobs()
    spurious = [(_softmax_logits(big | small), torch.from_numpy(big.astype(np.int64))[None])]  # truth: one lesion
    decision = decide(spurious, "labels", NAMES)
    assert decision["largest_component"] == ["edema"] and decision["cases"] == 1
    assert decision["dice"]["edema"][1] > decision["dice"]["edema"][0]
    two_real = [(_softmax_logits(big | small), torch.from_numpy((big | small).astype(np.int64))[None])]
    assert decide(two_real, "labels", NAMES)["largest_component"] == []  # removing a true lesion costs Dice


class TwoBlobs(nn.Module):
    """Class 1 wherever channel 0 is bright: the prediction has exactly the input's blobs."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
        logits[:, 0] = 1.0
        logits[:, 1] = (x[:, 0] > 1.5).float() * 5.0
        return logits


def test_predictor_applies_what_the_card_says():
    from voxray.preprocessing.datasets import Volume
    from voxray.training.predict import Predictor

    big, small = _blobs()
    image = np.ones((1, 20, 20, 20), np.float32) + 2 * (big | small)
    card = {"patch": [16, 16, 16], "channels": ["t1"], "task": "labels", "labels": dict(enumerate(NAMES)),
            "preprocess": {"normalize": "none", "crop_nonzero": False}}
    vol = Volume(image=image, label=None, affine=np.eye(4), channels=("t1",))
    raw = Predictor(TwoBlobs(), card).predict(vol)
    kept = Predictor(TwoBlobs(), card | {"postprocess": {"largest_component": ["edema"]}}).predict(vol)
    assert (raw == 1).sum() == (big | small).sum() and np.array_equal(kept == 1, big)


def test_export_records_the_decision(tmp_path, monkeypatch):
    import voxray.training.loop as loop
    from voxray.training.export import export_checkpoint
    from voxray.training.registry import read_card

    store = train_helpers().make_fake_store(3, shape=(16, 16, 16))
    spec = TrainSpec(store="unused", task="labels", model={"name": "unet", "channels": [4, 8], "num_res_units": 0},
                     patch=[16, 16, 16], batch_size=1, validation={"max_cases": 2})
    torch.manual_seed(0)
    model = loop.build_network(spec, in_channels=4, out_channels=4)
    (tmp_path / "ckpt").mkdir()
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt" / "state.pt")
    version = export_checkpoint(tmp_path / "ckpt", spec, store, name="pp", registry_root=str(tmp_path / "reg"),
                                metrics={}, source={}, val_ids=["case01", "case02"])
    post = read_card(version)["postprocess"]
    names = tasks.output_names("labels", store.metadata())
    assert post["cases"] == 2 and set(post["dice"]) == set(names[1:]) and set(post["largest_component"]) <= set(names)
    plain = export_checkpoint(tmp_path / "ckpt", spec, store, name="pp", registry_root=str(tmp_path / "reg"),
                              metrics={}, source={})
    assert "postprocess" not in read_card(plain)  # without held-out cases nothing is decided

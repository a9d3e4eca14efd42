"""Training test helpers (imported by name, `from _train_helpers import …`, so they resolve whichever other
`conftest` module pytest loaded last): an in-memory store look-alike (the Store reader's interface, numpy arrays behind it)
with learnable synthetic BraTS-like cases: nested spheres (WT ⊃ TC ⊃ ET) visible in the image channels."""

from __future__ import annotations

import numpy as np

MSD_META = {"layout": "msd_brats", "channels": ["FLAIR", "T1w", "t1gd", "T2w"],
            "labels": {0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"},
            "label_encoding": "index", "regions": {"ET": [3], "TC": [2, 3], "WT": [1, 2, 3]}, "slice_axis": None}


def brats_like_case(shape=(24, 24, 24), seed=0, channels=4) -> tuple[np.ndarray, np.ndarray]:
    """One case: label (Z,Y,X) with nested spheres at a random centre, image channels that show them + noise."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    c = [rng.integers(n // 3, 2 * n // 3 + 1) for n in shape]
    r = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
    big = rng.uniform(5, 7)
    label = np.zeros(shape, np.uint8)
    label[r < big] = 1
    label[r < big * 0.6] = 2
    label[r < big * 0.3] = 3
    image = rng.normal(0, 0.3, size=(channels, *shape)).astype(np.float32)
    for ch in range(channels):
        image[ch] += (label == 1 + ch % 3) * 1.5 + (label > 0) * 0.5
    return image, label


class FakeStore:
    """The subset of `voxray.preprocessing.store.Store` that training reads, over numpy arrays."""

    def __init__(self, cases: dict[str, tuple[np.ndarray, np.ndarray]], meta: dict) -> None:
        self.cases, self.meta = cases, meta
        self.channels = tuple(meta["channels"])
        self.layout = meta["layout"]
        self.attrs = {"transform": {"spacing": None}}

    def metadata(self) -> dict:
        return dict(self.meta)

    def case_ids(self) -> list[str]:
        return sorted(self.cases)

    def data_version(self) -> dict:
        """As Store.data_version: checksums of the cases' bytes (what run_train keys a finished run on)."""
        import hashlib
        import json

        cases = {c: hashlib.sha256(np.ascontiguousarray(img).tobytes()
                                   + (b"" if lab is None else np.ascontiguousarray(lab).tobytes())).hexdigest()[:16]
                 for c, (img, lab) in sorted(self.cases.items())}
        return {"hash": hashlib.sha256(json.dumps(cases).encode()).hexdigest()[:16], "cases": cases}

    def image(self, case_id):
        return self.cases[case_id][0]

    def label(self, case_id):
        return self.cases[case_id][1]

    def has_label(self, case_id) -> bool:
        return self.cases[case_id][1] is not None

    def case_attrs(self, case_id):
        return {"spacing": [1.0, 1.0, 1.0]}

    def fg_coords(self, case_id):
        lab = self.cases[case_id][1]
        if lab is None:
            return {}
        return {int(v): np.argwhere(lab == v) for v in np.unique(lab) if v > 0}


def make_fake_store(n=6, shape=(24, 24, 24), channels=4, unlabelled=0) -> FakeStore:
    """`n` labelled cases `caseNN` plus `unlabelled` image-only cases `testNN` (label None, as a test split)."""
    cases = {f"case{i:02d}": brats_like_case(shape, seed=i, channels=channels) for i in range(n)}
    for i in range(unlabelled):
        cases[f"test{i:02d}"] = (brats_like_case(shape, seed=100 + i, channels=channels)[0], None)
    return FakeStore(cases, {**MSD_META, "channels": MSD_META["channels"][:channels]})


def phantom_store(n=6, shape=(40, 40, 32), difficulty=2, seed=0) -> FakeStore:
    """`n` realistic synthetic MSD-BraTS cases (voxray synth's phantom at `difficulty`), preprocessed as a real store
    holds them: the data the learning tests train on, which a per-voxel intensity rule cannot solve."""
    from voxray.preprocessing.datasets import Volume
    from voxray.preprocessing.synth import msd_brats
    from voxray.preprocessing.synth.fields import Grid
    from voxray.preprocessing.synth.phantom import brain_case
    from voxray.preprocessing.transforms import TransformConfig, preprocess_volume

    grid = Grid(tuple(shape), np.eye(4))
    cases = {}
    for i in range(n):
        images, lesion, _ = brain_case({"t1": grid}, msd_brats.MODALITIES, "t1", np.random.default_rng([seed, i]),
                                       lesion="glioma", level=difficulty)
        vol = Volume(image=np.stack([images[m] for m in msd_brats.MODALITIES]), label=lesion, affine=grid.affine,
                     channels=tuple(msd_brats.MODALITIES))
        pre = preprocess_volume(vol, TransformConfig())
        cases[f"case{i:02d}"] = (pre.image, pre.label)
    return FakeStore(cases, dict(MSD_META))


def val_curve(run_dir, name: str = "val/dice_mean") -> dict[int, float]:
    """{step: value} of one metric from a run's metrics.csv (step 0 = the untrained network with at_start)."""
    from pathlib import Path

    from voxray.training.tracking import read_metrics

    return {r["step"]: r["value"] for r in read_metrics(Path(run_dir) / "metrics.csv") if r["name"] == name}

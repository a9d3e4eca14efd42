"""benchmarks/predict.py measures what it says: the bare forward covers exactly the windows predict slides over,
and the end-to-end run writes a mask on the input's grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np

import predict as bench


def test_windows_and_end_to_end_on_a_small_volume(tmp_path):
    from voxray.training.predict import Predictor

    model = bench.make_model(tmp_path)
    path = bench.make_volume(tmp_path / "case.nii.gz", (48, 56, 40))
    data = np.asarray(nib.load(str(path)).dataobj)
    assert data.shape == (48, 56, 40, 4) and 0.1 < (data[..., 0] != 0).mean() < 0.3  # a head on empty background, ~BraTS
    predictor = Predictor.from_registry(model, device="cpu")
    windows, grid = bench.window_count(predictor, path)
    seen = []
    from voxray.training.predict import predict_images

    predict_images(predictor, path, progress=lambda done, total: seen.append(total))
    assert windows == seen[-1] and len(grid) == 3
    calls = []
    real = predictor.model.forward
    predictor.model.forward = lambda x: calls.append(x.shape[0]) or real(x)
    bench.bare_forward(predictor, windows)
    assert sum(calls) == windows and max(calls) == predictor.settings.batch
    bench.end_to_end(predictor, path, tmp_path / "out.nii.gz")
    mask = nib.load(str(tmp_path / "mask.nii.gz"))
    assert mask.shape == (48, 56, 40) and np.allclose(mask.affine, nib.load(str(path)).affine)

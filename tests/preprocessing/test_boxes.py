"""Box reads out of stored arrays: the chunk fast path equals numpy slicing + zero padding, for every codec the
writer uses, missing (all-fill) chunks, channel subsets, object stores and arrays only zarr can read."""

import numpy as np
import pytest
import zarr

from voxray.preprocessing.store.boxes import fast_path, read_box
from voxray.preprocessing.store.codecs import compressors


def _reference(data: np.ndarray, start, box, lead: int, channels=None, fill=0) -> np.ndarray:
    pad = [(0, 0)] * lead + [(max(0, -s), max(0, s + p - n)) for s, p, n in zip(start, box, data.shape[lead:])]
    padded = np.pad(data, pad, constant_values=fill)
    sl = tuple(slice(s + lo, s + lo + p) for s, p, (lo, _) in zip(start, box, pad[lead:]))
    out = padded[(slice(None),) * lead + sl]
    return out if channels is None else out[list(channels)]


def _volume(shape=(3, 20, 23, 17), zero_corner=True) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.normal(size=shape).astype(np.float16)
    if zero_corner:  # whole chunks of zeros: zarr does not write them
        data[:, :8, :8, :8] = 0
    return data


def _boxes(shape, box, n=25, seed=1):
    rng = np.random.default_rng(seed)
    yield (0, 0, 0)
    yield tuple(s - 1 for s in shape)  # one voxel inside, the rest padding
    yield tuple(-p for p in box)  # entirely outside
    for _ in range(n):
        yield tuple(int(rng.integers(-p // 2, s - p // 2 + 1)) for s, p in zip(shape, box))


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd"])
def test_fast_path_equals_numpy_with_padding(tmp_path, codec):
    data = _volume()
    arr = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=data.shape, dtype="float16", chunks=(3, 8, 8, 8),
                            compressors=compressors(codec, 1, "float16"), zarr_format=3)
    arr[...] = data
    arr = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    assert fast_path(arr) == ("raw" if codec == "none" else "blosc")
    assert not (tmp_path / "a.zarr" / "c" / "0" / "0" / "0" / "0").exists()  # the zero chunk was skipped
    box = (9, 12, 5)
    for start in _boxes(data.shape[1:], box):
        got = read_box(arr, start, box, lead=1, dtype=np.float32)
        assert got.dtype == np.float32 and got.shape == (3, *box)
        np.testing.assert_array_equal(got, _reference(data, start, box, 1).astype(np.float32), err_msg=str(start))


def test_channel_subset_and_order(tmp_path):
    data = _volume()
    arr = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=data.shape, dtype="float16", chunks=(3, 8, 8, 8),
                            compressors=compressors("lz4", 1, "float16"), zarr_format=3)
    arr[...] = data
    for start in _boxes(data.shape[1:], (6, 6, 6), n=8):
        got = read_box(arr, start, (6, 6, 6), lead=1, channels=[2, 0])
        np.testing.assert_array_equal(got, _reference(data, start, (6, 6, 6), 1, [2, 0]).astype(np.float32))


def test_channels_split_over_chunks_and_uint8_labels(tmp_path):
    data = _volume()
    arr = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=data.shape, dtype="float16", chunks=(2, 7, 8, 9),
                            compressors=compressors("lz4", 1, "float16"), zarr_format=3)
    arr[...] = data
    got = read_box(arr, (-2, 3, 10), (16, 16, 16), lead=1, channels=[1, 2])
    np.testing.assert_array_equal(got, _reference(data, (-2, 3, 10), (16, 16, 16), 1, [1, 2]).astype(np.float32))
    label = (np.random.default_rng(2).random(data.shape[1:]) * 4).astype(np.uint8)
    lab = zarr.create_array(store=str(tmp_path / "l.zarr"), shape=label.shape, dtype="uint8", chunks=(8, 8, 8),
                            compressors=compressors("lz4", 1, "uint8"), zarr_format=3)
    lab[...] = label
    for start in _boxes(label.shape, (9, 9, 9), n=8):
        got = read_box(lab, start, (9, 9, 9), dtype=np.uint8)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, _reference(label, start, (9, 9, 9), 0))


def test_nonzero_fill_value_fills_missing_chunks_but_not_padding(tmp_path):
    data = np.full((16, 16, 16), 7, np.float32)
    data[8:, 8:, 8:] = 1
    arr = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=data.shape, dtype="float32", chunks=(8, 8, 8),
                            fill_value=7, zarr_format=3)
    arr[...] = data  # every chunk but one equals the fill value and is not written
    got = read_box(arr, (-4, 4, 4), (12, 12, 12))
    np.testing.assert_array_equal(got, _reference(data, (-4, 4, 4), (12, 12, 12), 0))


def test_object_store_and_sharded_arrays_read_the_same(tmp_path):
    data = _volume(zero_corner=False)
    mem = zarr.create_array(store=zarr.storage.MemoryStore(), shape=data.shape, dtype="float16", chunks=(3, 8, 8, 8),
                            compressors=compressors("lz4", 1, "float16"), zarr_format=3)
    mem[...] = data
    sharded = zarr.create_array(store=str(tmp_path / "s.zarr"), shape=data.shape, dtype="float16",
                                chunks=(3, 4, 4, 4), shards=(3, 8, 8, 8), zarr_format=3)
    sharded[...] = data
    assert fast_path(mem) == "blosc" and fast_path(sharded) is None
    for start in _boxes(data.shape[1:], (7, 9, 11), n=6):
        want = _reference(data, start, (7, 9, 11), 1).astype(np.float32)
        np.testing.assert_array_equal(read_box(mem, start, (7, 9, 11), lead=1), want)
        np.testing.assert_array_equal(read_box(sharded, start, (7, 9, 11), lead=1), want)
        np.testing.assert_array_equal(read_box(data, start, (7, 9, 11), lead=1, channels=[1]),
                                      want[[1]])  # numpy arrays (test stores) take the same path


def test_channels_need_one_leading_axis():
    with pytest.raises(ValueError, match="lead=1"):
        read_box(np.zeros((4, 4, 4)), (0, 0, 0), (2, 2, 2), channels=[0])

"""The UW-Madison RLE codec against hand-computed cases, in both directions and both orders."""

from __future__ import annotations

import numpy as np
import pytest

from voxray.preprocessing.datasets.rle import rle_decode, rle_encode

# 3 rows x 4 columns. Row-major flat order: row 0 = pixels 1..4, row 1 = 5..8, row 2 = 9..12 (1-based).
MASK = np.array([[0, 1, 1, 0],
                 [0, 0, 0, 1],
                 [1, 1, 0, 0]], dtype=np.uint8)
ROW = "2 2 8 3"          # pixels 2,3 | 8,9,10 (runs continue across row ends: 8 = (1,3), 9 = (2,0), 10 = (2,1))
COLUMN = "3 2 6 2 11 1"  # column-major flat: col0 = 1..3 (3), col1 = 4..6 (4, 6), col2 = 7..9 (7), col3 = 10..12 (11)


def test_row_major_hand_case():
    assert rle_encode(MASK) == ROW
    np.testing.assert_array_equal(rle_decode(ROW, (3, 4)), MASK.astype(bool))


def test_column_major_hand_case():
    assert rle_encode(MASK, order="column") == COLUMN
    np.testing.assert_array_equal(rle_decode(COLUMN, (3, 4), order="column"), MASK.astype(bool))


def test_round_trip_random_non_square():
    rng = np.random.default_rng(0)
    mask = rng.random((7, 11)) > 0.6
    for order in ("row", "column"):
        np.testing.assert_array_equal(rle_decode(rle_encode(mask, order), mask.shape, order), mask)


def test_empty_and_full():
    assert rle_encode(np.zeros((2, 2))) == ""
    assert not rle_decode("", (2, 2)).any()
    assert rle_encode(np.ones((2, 2))) == "1 4"


@pytest.mark.parametrize("rle, message", [
    ("11 3", "ends at pixel 13, past the 3x4 image"),
    ("0 2", "1-based"),
    ("1 2 3", "odd number"),
    ("1 x", "not an integer"),
])
def test_bad_runs(rle, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(rle, (3, 4))
    with pytest.raises(ValueError, match="order"):
        rle_decode("1 1", (3, 4), order="diagonal")

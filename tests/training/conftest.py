"""Training fixtures; the helpers live in `_train_helpers` (a unique module name: several test folders have a
`conftest`, so `from conftest import …` can find another folder's)."""

from __future__ import annotations

import pytest

from _train_helpers import MSD_META, FakeStore, brats_like_case, make_fake_store  # noqa: F401  (re-exported)


@pytest.fixture
def fake_store() -> FakeStore:
    return make_fake_store()

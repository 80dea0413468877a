"""Fixtures shared by the test modules."""

from pathlib import Path

import pytest

from tests.helpers import REPO, SHARED_DATA


@pytest.fixture
def sample_archive() -> Path:
    """The 1,000-photo sample of the Kaggle training set (Kaggle layout); the test is skipped without it."""
    path = SHARED_DATA / "dogs-vs-cats-sample" / "train.zip"
    if not path.is_file():
        pytest.skip(f"the real-photo sample is absent ({path.relative_to(REPO.parent)} beside the repository)")
    return path

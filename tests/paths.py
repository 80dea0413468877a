"""Where the repository and the real photos are, apart from tests/helpers.py: conftest.py needs
them, and the process that starts the parallel workers reads conftest.py before it starts them,
so it must not import torch (3 s on a 2-core Zen 3, paid before any test ran)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Real Kaggle photos, when this clone sits beside a `shared/` folder that holds them; never in the repository.
SHARED_DATA = REPO.parent / "shared" / "data"

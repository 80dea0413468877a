"""The model zoo: `names()` (what `model: all` trains), `registered()` (and the models trained only
when named), `build(name, num_classes=2, **options)`, and what training needs to know.

Importing the architecture modules registers their builders, in the order `model: all` trains them.
"""

# isort: off
from pipeline.models import classic, resnet, transfer  # noqa: F401  (registration order: the zoo's)
from pipeline.models import efficientnet  # noqa: F401  (after the zoo: trained only when named)

# isort: on
from pipeline.models.probe import feature_map, preflight  # noqa: F401
from pipeline.models.registry import (  # noqa: F401
    bf16_ok,
    build,
    check_options,
    ensure_weights,
    min_image_size,
    names,
    normalization,
    option_types,
    pretrained,
    registered,
    resolve,
)
from pipeline.models.transfer import TORCHVISION, precomputes  # noqa: F401

"""The model zoo: `names()`, `build(name, num_classes=2, **options)`, and what training needs to know.

Importing the architecture modules registers their builders, in the order `model: all` trains them.
"""

from pipeline.models.registry import (  # noqa: F401
    TORCHVISION,
    build,
    check_options,
    feature_map,
    min_image_size,
    names,
    option_types,
    preflight,
    resolve,
)
from pipeline.models import classic, resnet, transfer  # noqa: E402,F401  (registration order)

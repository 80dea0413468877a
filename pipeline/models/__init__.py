"""The model zoo: `names()`, `build(name, num_classes=2, **options)`, and what training needs to know.

Importing the architecture modules registers their builders, in the order `model: all` trains them.
"""

from pipeline.models import classic, resnet, transfer  # noqa: F401  (registration order)
from pipeline.models.probe import feature_map, preflight  # noqa: F401
from pipeline.models.registry import (  # noqa: F401
    build,
    check_options,
    min_image_size,
    names,
    option_types,
    resolve,
)
from pipeline.models.transfer import TORCHVISION  # noqa: F401

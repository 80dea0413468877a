"""A trained model from Python, in two lines, through the same code as `python -m pipeline.predict`:

    from pipeline import Classifier
    Classifier.load().predict("my_cat.jpg")      # Prediction(label='cat', probabilities={'cat': 0.97, 'dog': 0.03})

`Classifier.load(model=None)` takes what predict's `--model` takes (a model file, a name under the
pipeline's models folder, or the leaderboard's best when None). `predict` takes a photo's path, a
folder or a zip (a list of Predictions, in predict's order), a PIL image, or an (H, W, 3) or (H, W)
uint8 array; each is resized exactly as the model's test photos were (the size and resize policy of
its model file), normalised as its weights expect, then classified in eval mode, with test-time
augmentation as params.yaml's `evaluate.tta` says (`tta=` overrides it). Files are decoded from the
photo formats only, as everywhere in the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.common import cli, schema
from pipeline.common.errors import StageError
from pipeline.data import images
from pipeline.evaluation import predicting
from pipeline.models import bf16_ok, modelfile
from pipeline.params.sections import RuntimeParams, load_evaluate
from pipeline.runtime.device import Compute, resolve


@dataclass(frozen=True)
class Prediction:
    label: str  # the most probable class; "" when the photo could not be read
    probabilities: dict[str, float]  # every class the model knows, in its order
    error: str = ""  # why a photo could not be read ("not an image", "too large", ...)
    source: str = ""  # the photo's name, for files


def too_large(width: int, height: int) -> None:
    """A decompression bomb's size, in memory: the same cap on pixels as a photo file has."""
    if images.MAX_PIXELS is not None and width * height > images.MAX_PIXELS:
        raise StageError(
            f"an image of {width}×{height} px is larger than a photo may be ({images.MAX_PIXELS:,} pixels)"
        )


class Classifier:
    def __init__(self, model, meta: dict, compute: Compute):
        self.model, self.meta, self.compute = model, meta, compute
        self.classes: tuple[str, ...] = tuple(meta["classes"])

    @classmethod
    def load(cls, model: str | Path | None = None, *, device: str = "auto", precision: str = "auto") -> Classifier:
        """The model file `model` names (see the module's doc), on `device`, in `precision` (auto:
        as it was trained: bf16 where the device computes it natively and the architecture keeps
        its accuracy)."""
        path = modelfile.find(None if model is None else str(model), cli.pipeline_paths())
        runtime = {"device": device, "compile": False, "resume": False, "precision": precision}
        compute = resolve(schema.build_section(RuntimeParams, runtime, "runtime"))  # checked as params.yaml's would be
        network, meta = modelfile.load(path, compute.device, compute.format)
        return cls(network, meta, compute.for_model(meta["name"], bf16_ok(meta["name"])))

    def predict(self, photo, *, tta: bool | None = None) -> Prediction | list[Prediction]:
        """One Prediction for an image (PIL or array) or a single photo file; a list for a folder or a
        zip. `tta`: average with the mirror image's prediction; None: as `evaluate` did (evaluate.tta)."""
        tta = load_evaluate().tta if tta is None else tta
        if isinstance(photo, (str, Path)):
            path = Path(photo)
            found = predicting.photos([path])
            out = [
                self._prediction(p)
                for p in predicting.predict(self.model, self.meta, found, compute=self.compute, tta=tta)
            ]
            return out[0] if path.is_file() and path.suffix.lower() != ".zip" else out
        batch = self._array(photo)[None]
        proba = predicting.classify(self.model, batch, self.compute, 1, tta)[0]
        return Prediction(self.classes[int(proba.argmax())], dict(zip(self.classes, map(float, proba))))

    def _array(self, image) -> np.ndarray:
        """(C, S, S) uint8 for the model, from a PIL image or an (H, W, 3) / (H, W) uint8 array."""
        if isinstance(image, np.ndarray):
            if image.ndim >= 2:
                too_large(image.shape[1], image.shape[0])  # before Image.fromarray copies it
            if (
                image.dtype != np.uint8
                or image.ndim not in (2, 3)
                or (image.ndim == 3 and image.shape[2] not in (1, 3, 4))
            ):
                raise StageError(
                    f"an array to classify must be (H, W), (H, W, 3) or (H, W, 4) uint8, got {image.shape} "
                    f"{image.dtype}"
                )
            image = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[2] == 1 else image)
        if not isinstance(image, Image.Image):
            raise StageError(f"predict takes a path, a PIL image or a uint8 array, not {type(image).__name__}")
        if min(image.size) < images.MIN_SIDE:
            raise StageError(f"an image of {image.size[0]}×{image.size[1]} px is too small to classify")
        too_large(image.width, image.height)
        try:
            rgb = images.to_rgb(image)  # the decoder's own conversion: transparency onto white, 16-bit grey
        except ValueError as e:  # a mode Pillow cannot convert to RGB
            raise StageError(f"an image of mode {image.mode} cannot be classified ({e})") from None
        return images.fit(rgb, self.meta["image_size"], self.meta["resize"], self.meta["channels"])

    def _prediction(self, p: predicting.Prediction) -> Prediction:
        proba = {} if p.proba is None else dict(zip(self.classes, map(float, p.proba)))
        return Prediction(p.label, proba, p.error, p.photo.name)

"""`python -m pipeline.export`: a program that classifies raw uint8 photos in a process that has
never imported this project, with the same probabilities as the model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import export, models, predict
from pipeline.models import modelfile
from pipeline.runtime.device import Compute
from pipeline.runtime.inference import probabilities
from pipeline.runtime.tensors import Split
from tests.helpers import documentation

CPU = Compute(torch.device("cpu"))  # fp32, channels-last: what evaluate computes by default

# Run in a fresh interpreter, from a folder without the project: torch alone loads and runs the file.
ALONE = """
import json, sys
import numpy as np, torch
meta = {"meta.json": ""}
program = torch.export.load(sys.argv[1], extra_files=meta)
x = torch.from_numpy(np.load(sys.argv[2]))
project = [m for m in sys.modules if m.startswith("pipeline")]
print(json.dumps({"meta": json.loads(meta["meta.json"]), "proba": program.module()(x).tolist(),
                  "one": program.module()(x[:1]).tolist(), "project": project}))
"""


@pytest.mark.slow  # a fresh interpreter
@pytest.mark.parametrize(
    "name, size", [("resnet18", 32), ("efficientnet_lite0", 64)]
)  # ImageNet's normalisation inside, and the Lite weights' own
def test_the_export_classifies_uint8_photos_without_the_project(tmp_path, name, size):
    torch.manual_seed(0)
    path = tmp_path / f"{name}.pt"
    modelfile.save(
        path,
        models.build(name),
        name=name,
        options={},
        meta={"image_size": size, "resize": "squash", "channels": 3, "classes": ["cat", "dog"]},
    )
    info = export.export(path, tmp_path / f"{name}.pt2")
    photos = np.random.default_rng(0).integers(0, 256, (5, 3, size, size), dtype=np.uint8)
    np.save(tmp_path / "photos.npy", photos)
    done = subprocess.run(
        [sys.executable, "-c", ALONE, str(tmp_path / f"{name}.pt2"), str(tmp_path / "photos.npy")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["project"] == []
    assert out["meta"] == info and info["input"] == {
        "dtype": "uint8",
        "shape": ["N", 3, size, size],
        "channels": "RGB",
        "size": size,
        "resize": "squash",
    }
    assert info["output"] == {"probabilities": ["cat", "dog"]}
    model, _ = modelfile.load(path)
    split = Split(images=torch.from_numpy(photos), labels=torch.zeros(5, dtype=torch.long), device=torch.device("cpu"))
    expected = probabilities(model, split, 64).numpy()  # what evaluate and predict compute
    assert np.allclose(out["proba"], expected, atol=1e-5)
    assert np.allclose(out["one"], expected[:1], atol=1e-5)  # any batch size: the batch dimension is dynamic


@pytest.mark.slow  # a fresh interpreter
def test_the_readme_snippet_classifies_a_jpeg_as_predict_does(tmp_path):
    readme = documentation()
    snippet = next(
        block for block in readme.split("```python\n")[1:] if 'torch.export.load("exports/best.pt2"' in block
    ).split("```")[0]
    torch.manual_seed(0)
    path = tmp_path / "models" / "resnet18.pt"
    path.parent.mkdir()
    modelfile.save(
        path,
        models.build("resnet18"),
        name="resnet18",
        options={},
        meta={"image_size": 32, "resize": "crop", "channels": 3, "classes": ["cat", "dog"]},
    )
    (tmp_path / "exports").mkdir()
    export.export(path, tmp_path / "exports" / "best.pt2")
    pixels = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)  # landscape: the crop matters
    Image.fromarray(pixels).save(tmp_path / "my_photo.jpg", quality=90)
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    p_cat, p_dog = (float(word.strip(",")) for word in done.stdout.split()[1::2])
    model, meta = modelfile.load(path)
    [expected] = predict.predict(model, meta, predict.photos([tmp_path / "my_photo.jpg"]), compute=CPU)
    assert (p_cat, p_dog) == pytest.approx(tuple(expected.proba), abs=1e-3)  # printed to 3 decimals

"""Stage `export`, and a command: a trained model as one file that classifies without this project.

`python -m pipeline.export --model resnet18 --out resnet18.pt2` writes a `torch.export` program
that takes a raw batch, uint8 (N, C, S, S) (C = 3, RGB, or 1, grey, as the model was trained), the
photos resized as in training (the centred square, or the whole photo squashed, to S px), and
returns class probabilities (N, classes) in the order of `classes`: the normalisation is inside.
`torch.export.load(path).module()(x)` runs
it with nothing but torch. The file's metadata (`meta.json`, an extra file) gives the input size,
the channels, the resize policy and the classes. The pipeline's `export` stage writes
the leaderboard's best model to exports/best.pt2, declared in dvc.yaml's `artifacts:`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from torch import nn

from pipeline.common import atomic, cli
from pipeline.models import inputs, modelfile
from pipeline.runtime.tensors import affine

MAX_BATCH = 4096  # the largest batch the exported program accepts (torch.export needs a bound)


class Classifier(nn.Module):
    """uint8 (N, C, S, S) → probabilities (N, classes): the model behind its own normalisation, the
    one its weights were trained with (models.inputs.of)."""

    def __init__(self, model: nn.Module, channels: int = 3):
        super().__init__()
        self.model = model.eval()  # eval mode is baked in: BatchNorm's running statistics, no dropout
        scale, shift = affine(inputs.of(model), channels)
        self.register_buffer("scale", torch.tensor(scale).view(1, channels, 1, 1))
        self.register_buffer("shift", torch.tensor(shift).view(1, channels, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.shift, images.float(), self.scale)  # runtime.tensors.normalize's arithmetic
        return torch.softmax(self.model(x).float(), dim=1)


def export(path: Path, out: Path) -> dict:
    """Write model file `path` as a torch.export program to `out` (appears complete or not at all);
    returns the metadata stored with it."""
    model, meta = modelfile.load(path, "cpu")
    model = model.to(memory_format=torch.contiguous_format)  # the plain layout any runtime expects
    size, channels = meta["image_size"], meta["channels"]
    example = torch.zeros(2, channels, size, size, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(Classifier(model, channels).eval(), (example,), dynamic_shapes={"images": {0: batch}})
    info = {
        "model": meta["name"],
        "input": {
            "dtype": "uint8",
            "shape": ["N", channels, size, size],
            "channels": "RGB" if channels == 3 else "grey",
            "size": size,
            "resize": meta["resize"],
        },
        "output": {"probabilities": list(meta["classes"])},
        "torch": torch.__version__,
    }
    buffer = io.BytesIO()  # torch names a .pt2 by its suffix; the temporary file's would not do
    torch.export.save(program, buffer, extra_files={"meta.json": json.dumps(info, indent=2)})
    atomic.write_bytes(out, buffer.getvalue())
    return info


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--model", help="a model name from the models folder, or a model file (default: the best)")
    parser.add_argument("--out", type=Path, required=True, help="the file to write (.pt2)")
    args = parser.parse_args()
    cli.writable_file(args.out, "--out")  # before minutes of torch.export
    path = modelfile.find(args.model, cli.pipeline_paths())
    info = export(path, args.out)
    size, channels, classes = info["input"]["size"], info["input"]["shape"][1], info["output"]["probabilities"]
    out = f"P({', '.join(classes)})" if len(classes) <= 4 else f"P of {len(classes)} classes"
    print(f"export: {info['model']} → {args.out} (uint8 N×{channels}×{size}×{size} in, {out} out)")


if __name__ == "__main__":
    cli.run(main)

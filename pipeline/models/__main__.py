"""`python -m pipeline.models`: every registered architecture, its parameters for two classes, and for
the pretrained ones what their weights are (ImageNet top-1, the native input size, the
normalisation they expect, where they come from), as the registry holds them."""

from __future__ import annotations

import argparse

import torch

from pipeline.models.registry import build, option_types, pretrained, registered


def parameters(name: str) -> int:
    """Parameters of `name` for two classes, as params.yaml builds it by default, counted on the meta device."""
    options = {"pretrained": False} if "pretrained" in option_types(name) else {}
    with torch.device("meta"):
        return sum(p.numel() for p in build(name, **options).parameters())


def table() -> str:
    rows = [("model", "parameters", "ImageNet top-1", "native size", "inputs (mean / std)", "weights")]
    for name in registered():
        weights = pretrained(name)
        if weights is None:
            rows.append((name, f"{parameters(name):,}", "", "", "ImageNet's", "none: trained from scratch"))
            continue
        n = weights.normalization
        stats = (
            "ImageNet's"
            if n.mean == (0.485, 0.456, 0.406)
            else f"{'/'.join(f'{v:g}' for v in n.mean)} / {'/'.join(f'{v:g}' for v in n.std)}"
        )
        rows.append(
            (name, f"{parameters(name):,}", f"{weights.top1:g}%", f"{weights.native_size} px", stats, weights.source)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main() -> None:
    argparse.ArgumentParser(prog="python -m pipeline.models", description=__doc__).parse_args()
    print(table())
    print(
        "torchvision:<name>: any torchvision classification model, with its ImageNet weights (torch hub) under the "
        "same head"
    )


if __name__ == "__main__":
    main()

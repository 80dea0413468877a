"""Stage `check`: validate all of params.yaml and the resources a run needs before any work, so a
typo, an unreachable data source or missing pretrained weights fail in seconds, all reported at once,
not one by one after the download and preprocessing.

Every later stage validates its own sections again; this stage only moves the failures to the front.
Its marker file never changes, so rerunning it (any param changed) reruns nothing downstream.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import atomic, cli, download, models, params
from pipeline.errors import StageError

MARKER = "params.yaml is valid and its resources are at hand\n"


def problems(p: params.Params, downloads: Path) -> list[str]:
    """Everything that would stop the run later: the data source, then the pretrained weights
    (fetched now into torch's cache if missing) and every model's shape at the image size."""
    found = []
    if problem := download.source_problem(p.data.source, downloads):
        found.append(problem)
    try:
        models.preflight(p.models, p.data.image_size)
    except StageError as e:
        found.append(str(e))
    return found


def copied_feature_maps(p: params.Params) -> list[str]:
    """One note per model whose classifier reads a feature map larger than the network makes at this
    image size (AlexNet and VGG below 224 px): honest about what the adaptive pool does."""
    notes = []
    for name in p.model_names:
        sides = models.feature_map(name, p.data.image_size)
        if sides and sides[1] > sides[0]:
            side, read = sides
            notes.append(
                f"note: at {p.data.image_size} px {name}'s last feature map is {side}×{side}; its adaptive pool "
                f"copies it up to the {read}×{read} its dense layers expect (more weights, no more information)"
            )
    return notes


def random_backbones(p: params.Params) -> list[str]:
    """One note per transfer model told to train from random weights: nothing of it is frozen or slowed."""
    notes = []
    for spec in p.models:
        types = models.option_types(spec.name)
        if "pretrained" in types and not spec.options.get("pretrained", types["pretrained"][1]):
            notes.append(
                f"note: {spec.name} trains from random weights (pretrained: false): all of it, at the full lr; "
                f"freeze and backbone_lr_scale apply to pretrained weights only"
            )
    return notes


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--out", type=Path, required=True, help="marker file written when all is well")
    parser.add_argument("--downloads", type=Path, required=True, help="the download stage's verified cache")
    args = parser.parse_args()
    p = params.load()
    if found := problems(p, args.downloads):
        if len(found) == 1:
            raise StageError(found[0])
        raise StageError(f"{len(found)} problems stop this run:\n" + "\n".join(f"- {problem}" for problem in found))
    atomic.write_text(args.out, MARKER)
    print(f"check: params.yaml is valid; training {', '.join(p.model_names)} at {p.data.image_size} px")
    print(p.recipe_table())
    for note in copied_feature_maps(p) + random_backbones(p):
        print(note)


if __name__ == "__main__":
    cli.run(main)

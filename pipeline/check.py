"""Stage `check`: validate all of params.yaml and the resources a run needs before any work, so a
typo, an unreachable data source or missing pretrained weights fail in seconds, all reported at once,
not one by one after the download and preprocessing.

Every later stage validates its own sections again; this stage only moves the failures to the front.
Its marker file never changes, so rerunning it (any param changed) reruns nothing downstream.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from pipeline import models
from pipeline.common import atomic, cli, files
from pipeline.common.errors import StageError
from pipeline.common.progress import about
from pipeline.data import sources, verdicts
from pipeline.params import recipes
from pipeline.params.sections import DataParams, RuntimeParams
from pipeline.runtime.device import Compute, auto_precision, choose_device, cpu_features, resolve
from pipeline.training.budget import training_estimate

MARKER = "params.yaml is valid and its resources are at hand\n"


DISK_MARGIN = 1 << 30  # bytes left free after the arrays and DVC's copy of them


def problems(p: recipes.Params, downloads: Path, *, free: int | None = None) -> list[str]:
    """Everything that would stop the run later: the data source, the verdict file, the device, the disk, then the
    pretrained weights (fetched now into torch's cache if missing) and every model's shape at the
    image size. `free`: bytes free where the pipeline writes (measured if None)."""
    found = []
    if problem := sources.source_problem(p.data.source, downloads):
        found.append(problem)
    try:
        verdicts.read(Path(p.data.verdicts))  # before the split has scanned the photos for a minute
    except StageError as e:  # ParamError too
        found.append(str(e))
    try:
        choose_device(p.runtime.device)
    except StageError as e:
        found.append(str(e))
    if problem := disk_problem(p.data, shutil.disk_usage(".").free if free is None else free, cache_copies()):
        found.append(problem)
    try:
        models.preflight(p.models, p.data.image_size, p.data.channels)
    except StageError as e:
        found.append(str(e))
    return found


def photos_at_most(data: DataParams) -> int:
    """How many photos the run can preprocess (sources.photos_at_most), without reading a photo."""
    return sources.photos_at_most(data.source, data.max_per_class)


def cache_copies(workspace: Path = Path(".")) -> int:
    """How many more copies of a stage's output DVC's cache takes: 0 where it clones them
    copy-on-write (this project's .dvc/config: `cache.type = reflink,copy`, on btrfs or XFS) or
    hardlinks them (a user's own config), else 1 (DVC copies: ext4, tmpfs, overlayfs; also outside
    a DVC project, to be safe)."""
    try:
        from dvc.repo import Repo

        with Repo(str(workspace)) as repo:
            cache = repo.cache.local
            first = next(iter(cache.cache_types), None)
            where = cache.path if os.path.exists(cache.path) else repo.dvc_dir
            same_device = os.stat(where).st_dev == os.stat(workspace).st_dev
            shared = same_device and (first == "hardlink" or (first == "reflink" and files.clones(where)))
    except Exception:  # not a DVC project, an unreadable config: assume the cache copies
        return 1
    return 0 if shared else 1


def disk_problem(data: DataParams, free: int, copies: int = 1) -> str | None:
    """The preprocessed arrays (uint8, channels × image_size² bytes a photo), and `copies` more of
    them in DVC's cache, must fit in the free space with a margin: else say so now, not when the disk is full."""
    arrays = photos_at_most(data) * data.channels * data.image_size**2
    need = (1 + copies) * arrays + DISK_MARGIN
    if need <= free:
        return None
    gib = 1 << 30
    cache = "DVC's cache as much again" if copies else "DVC's cache shares their blocks, no copy"
    return (
        f"data.image_size = {data.image_size}: the preprocessed arrays would take {arrays / gib:,.1f} GiB, and "
        f"{cache}; with a 1 GiB margin that needs {need / gib:,.1f} GiB but {free / gib:,.1f} GiB "
        f"are free here. Lower data.image_size or data.max_per_class, or free some space."
    )


def over_budget(p: recipes.Params, seconds: float) -> str | None:
    """Why a run this long should not start unless asked: runtime.budget_hours, and what fits."""
    budget = p.runtime.budget_hours
    if not budget or seconds <= budget * 3600:
        return None
    return (
        f"training would take {about(seconds)} here, more than runtime.budget_hours = {budget:g}: raise it (-S "
        f"runtime.budget_hours={math.ceil(seconds / 3600)}, or 0 for no limit) to train anyway, or run less: "
        "the presets cpu-64, cpu-transfer, cpu-course and cpu-zoo fit a 2-core CPU "
        "(python -m pipeline.preset cpu-zoo -S data.source=...; their times: docs/running.md, Presets), "
        "or lower data.image_size, train.epochs or choose fewer models"
    )


def copied_feature_maps(p: recipes.Params) -> list[str]:
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


def random_backbones(p: recipes.Params) -> list[str]:
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


def pretrained_inputs(p: recipes.Params) -> list[str]:
    """One note per pretrained model fed another size than its weights were trained at, and per
    model that trains its head on precomputed features (what those epochs leave out)."""
    notes = []
    for spec in p.models:
        weights = models.pretrained(spec.name)
        if weights and spec.options.get("pretrained", True) and p.data.image_size != weights.native_size:
            notes.append(
                f"note: {spec.name}'s ImageNet weights ({weights.top1:g}% top-1) were trained at {weights.native_size} "
                f"px; this run feeds them {p.data.image_size} px (a frozen backbone's features suffer most from the "
                "difference: docs/results.md, Transfer learning)"
            )
        if models.precomputes(spec.options):
            notes.append(
                f"note: {spec.name} computes its frozen backbone's features once (precompute): its head trains on "
                "those of each "
                f"training photo{' and its mirror image' * spec.train.flip}, without train.translate or crop_scale"
            )
    return notes


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--out", type=Path, required=True, help="marker file written when all is well")
    parser.add_argument("--downloads", type=Path, required=True, help="the download stage's verified cache")
    args = parser.parse_args()
    p = recipes.load()
    if found := problems(p, args.downloads):
        if len(found) == 1:
            raise StageError(found[0])
        raise StageError(f"{len(found)} problems stop this run:\n" + "\n".join(f"- {problem}" for problem in found))
    compute = resolve(p.runtime, processes=p.runtime.processes)
    print(f"check: params.yaml is valid; training {', '.join(p.model_names)} at {p.data.image_size} px")
    print(p.recipe_table())
    print(compute_lines(compute, p.runtime))
    for name in p.model_names:
        if (own := compute.for_model(name, models.bf16_ok(name))) != compute:
            print("  " + "; ".join(own.reasons))
    for note in copied_feature_maps(p) + random_backbones(p) + pretrained_inputs(p) + p.mistakes():
        print(note)
    seconds, lines = training_estimate(p, compute)  # last: the time, and the budget it must fit
    print("\n".join(lines), flush=True)
    if problem := over_budget(p, seconds):
        raise StageError(problem)
    atomic.write_text(args.out, MARKER)


def compute_lines(compute: Compute, rp: RuntimeParams) -> str:
    """How training will compute here, and why each `auto` chose as it did; a note where an explicit
    choice is slow on this device (bf16 a CPU only emulates)."""
    lines = [
        f"check: training computes on {compute.describe()}"
        + (f" × {rp.processes} processes" if rp.processes > 1 else "")
    ]
    lines += [f"  {reason}" for reason in compute.reasons]
    if (
        rp.precision == "bf16"
        and compute.device.type == "cpu"
        and auto_precision(compute.device, cpu_features())[0] != "bf16"
    ):
        lines.append(
            "note: runtime.precision = 'bf16' on a CPU without AMX or AVX-512 BF16: emulated, slower than fp32"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    cli.run(main)

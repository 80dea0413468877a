"""Stage `train`: train every architecture that `model` selects on the preprocessed data; write
each one's model file (models/<name>.pt) and every model's curves (dvclive/plots/custom/epochs.json).

Before anything trains, each model's time is estimated from a few timed steps (training.estimate);
then each model trains in turn (training.fit), its state saved after every epoch in the resume
folder, so an interrupted run continues where it was and a model already trained is skipped.

With runtime.processes = N above 1 the stage relaunches itself under `torchrun --nproc_per_node=N`:
each process holds its shard of both splits; process 0 alone prints and writes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from dvclive import Live

from pipeline import models
from pipeline.common import cli
from pipeline.common.errors import StageError
from pipeline.common.formats import read_json
from pipeline.models import modelfile
from pipeline.params import recipes
from pipeline.runtime import distributed
from pipeline.runtime.device import describe
from pipeline.runtime.tensors import load_split
from pipeline.training.curves import EpochLog
from pipeline.training.estimate import estimates
from pipeline.training.fit import fit
from pipeline.training.resume import ResumeFile, file_for, keep_model_file, key

EARLIER_FOLDER = "checkpoints"  # where versions before 0.1.0's release kept the resume state, beside `resume`


def train_all(p: recipes.Params, data: Path, out: Path, live_dir: Path, resume: Path) -> dict[str, dict]:
    """Train p.models on the preprocessed `data`; write out/<name>.pt and the epochs table under
    `live_dir`, resume state under `resume`. Returns each model's summary, as its model file keeps it."""
    writable_folder(resume, "the resume state")
    writable_folder(out, "the trained models")
    earlier = resume.parent / EARLIER_FOLDER
    if earlier.is_dir() and earlier.resolve() != resume.resolve():
        print(
            f"train: {earlier}/ holds resume state of an earlier version, which is not read: the state is in {resume}/ "
            f"now; delete {earlier}/",
            flush=True,
        )
    with distributed.launch(p.runtime) as (world, compute):
        device = compute.device
        # what the arrays are, as preprocess wrote them: the one source of size, channels, classes and resize
        meta = read_json(data / "meta.json")
        size, channels, classes = meta["image_size"], meta["channels"], tuple(meta["classes"])
        models.preflight(p.models, size, channels)
        train, val = (
            load_split(data, name, device, rank=world.rank, processes=world.size) for name in ("train", "val")
        )
        where = compute.describe() + (f" × {world.size} processes" if world.size > 1 else "")
        images = distributed.sum_over_processes([len(train), len(val)], device)
        if world.main:
            grey, named = "" if channels == 3 else " grey", ", ".join(classes[:4]) + ", ..." * (len(classes) > 4)
            print(
                f"train: {images[0]:,.0f} train / {images[1]:,.0f} val{grey} images of {len(classes)} classes "
                f"({named}) at {size} px on {where}"
            )
            print(p.recipe_table(), flush=True)
        if world.main and world.size < p.runtime.processes:
            print(
                f"train: runtime.processes = {p.runtime.processes}, but torchrun did not start them: training in "
                f"{world.size}"
            )
        computes = {spec.name: compute.for_model(spec.name, models.bf16_ok(spec.name)) for spec in p.models}
        keys = {spec.name: key(spec, meta["digest"], world.size, computes[spec.name].precision) for spec in p.models}
        if world.main:
            estimates(p, train, val, resume, keys, where, world, len(classes), computes)
        summaries = {}
        live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) if world.main else None  # process 0's
        with live or contextlib.nullcontext():
            epochs = EpochLog(live) if live else None
            for spec in p.models:

                def log(epoch: int, row: dict, name: str = spec.name) -> None:
                    epochs.add(name, epoch, row)

                state = ResumeFile(file_for(resume, spec.name), keys[spec.name], reuse=p.runtime.resume)
                model, summary = fit(
                    spec,
                    train,
                    val,
                    classes=len(classes),
                    compute=computes[spec.name],
                    world=world,
                    resume=state,
                    log=log if live else None,
                )
                summary |= {
                    "device": describe(device) + (f" × {world.size} processes" if world.size > 1 else ""),
                    "image_size": size,
                    "resize": meta["resize"],  # how a photo became the model's input: predict repeats it
                    "channels": channels,
                    "classes": list(classes),  # what each output means, in order
                    "train": asdict(spec.train),
                }
                if world.main:
                    recipes.unchanged(p, "train")  # the params file must still say what this model was trained with
                    modelfile.save(out / f"{spec.name}.pt", model, name=spec.name, options=spec.options, meta=summary)
                    keep_model_file(state.path, out / f"{spec.name}.pt")  # one copy of its weights, not three
                summaries[spec.name] = summary
                del model
    return summaries


def writable_folder(folder: Path, what: str) -> None:
    """Create `folder` if needed and make sure files can be written in it, before hours of training
    depend on it: else one StageError naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise StageError(
            f"{folder}: cannot write {what} there ({e.strerror or type(e).__name__}); fix its permissions or free space"
        ) from None


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--data", type=Path, required=True, help="preprocessed tensors")
    parser.add_argument("--out", type=Path, required=True, help="trained models")
    parser.add_argument("--live", type=Path, required=True, help="DVCLive folder")
    parser.add_argument("--resume", type=Path, required=True, help="per-epoch resume state (not a DVC output)")
    args = parser.parse_args()
    p = recipes.load()
    if p.runtime.processes > 1 and "LOCAL_RANK" not in os.environ:
        sys.exit(relaunch_under_torchrun(p.runtime.processes))
    train_all(p, args.data, args.out, args.live, args.resume)


def relaunch_under_torchrun(processes: int) -> int:
    """This same command in `processes` processes on this machine (torchrun --standalone); its exit
    status. One process needs no rendezvous, so the stage runs plain `python -m pipeline.train` and
    only hands over to torchrun for several; the count comes from params.yaml, not the shell."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.run([*command, "-m", __spec__.name, *sys.argv[1:]]).returncode


if __name__ == "__main__":
    cli.run(main)

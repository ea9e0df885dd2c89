"""GPU check, in steps, each in its own processes with its own time limit, in this order:

1. throughput: GPT-2 124M in bf16 with torch.compile (bench.gpu), tokens/s and MFU, with transformers' loss
   and 50,257 rows, and as the train stage builds it (its own loss, 50,304 rows);
2. repro: the default `dvc repro` in a temporary copy of this checkout, pages from the offline mirror;
3. tutorial: configs/presets/tutorial-124m.yaml through `dvc exp run`, for TUTORIAL_STEPS steps: time,
   peak memory, validation bits per character;
4. tests: the tests of the stages that use the device (train, evaluate, sample), CUDA-only ones included,
   three at a time where pytest-xdist is installed;
5. preset: the one-GPU preset, configs/presets/one-gpu.yaml (7 min): plan, time, bits per char, samples;
6. settings: bench.gpu --settings (6 min): memory not pinned, two loader workers, fp32 with TF32 off, on;
7. speed: bench.gpu --speed (8 min): the 124M model as trained beside each change that might raise its MFU.
8. recipe: recipes/one-gpu/pipeline.yaml as its dvc.yaml (7 min): the base on ruslit texts (../shared,
   or --shared), then fine-tuning on the pages, evaluate and sample: time, bits per char, style gap, samples.
The first four share an 8-minute budget (--budget); 5-8 run only when --only names them. A lent GPU's
15 minutes take two calls: `--only recipe --budget 420`, then `--only throughput,tests --budget 300`.

    python -m bench.gpu_check [--mirror ../shared/mirror/az.lib.ru] [--out bench/results/gpu_check]
        [--only tutorial,...] [--tiny]

--tiny shrinks every step (a 1-layer model, 20-step runs on one page, the CUDA-only tests alone) to check
the script on a CPU in minutes. Results go to OUT/gpu_check.{json,md} as each step ends, logs to OUT/<step>.log.
"""

import argparse
import glob
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from bench.workspace import ROOT, make_repo, python_env, shared_beside, with_overrides, with_preset_values
from tools.preset import set_argument

DEADLINE = float("inf")  # set from --budget
PRESET = ROOT / "configs/presets/one-gpu.yaml"
TUTORIAL_PRESET = ROOT / "configs/presets/tutorial-124m.yaml"
TUTORIAL_STEPS = {"train": {"max_steps": 200, "eval_steps": 100, "save_steps": 100}}
PIPELINE, RECIPE = "recipes/one-gpu/pipeline.yaml", "recipes/one-gpu/dvc.yaml"
TINY_PARAMS = {
    "fetch": {"urls": ["http://az.lib.ru/t/tolstoj_lew_nikolaewich/text_1860_dekabristy.shtml"]},
    "tokenizer": {"vocab_size": 512},
    "tokenize": {"block_size": 64},
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64},
    "train": {
        "max_steps": 20,
        "eval_steps": 10,
        "save_steps": 10,
        "logging_steps": 5,
        "warmup_steps": 2,
        "batch_size": 4,
        "eval_blocks": 16,
    },
    "evaluate": {"max_blocks": 32},
    "sample": {"max_new_tokens": 10},
}
TINY_THROUGHPUT = ["--n-layer", "1", "--n-embd", "64", "--steps", "4", "--batch", "1", "--block", "128"]  # bench.gpu's


def environment():
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": gpu or platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
    }


def run_logged(cmd, cwd, log, seconds, env):
    """Run cmd with its output in `log`; (exit status, wall seconds). Status 124: stopped at `seconds`
    or at the script's --budget, whichever comes first."""
    started = time.perf_counter()
    seconds = max(1, min(seconds, DEADLINE - started))
    with open(log, "w") as out:
        try:
            status = subprocess.run(
                cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=seconds
            ).returncode
        except subprocess.TimeoutExpired:
            status = 124
    return status, round(time.perf_counter() - started, 1)


def throughput(args, env, name="throughput", options=("--steps", "150"), seconds=240):
    sizes = TINY_THROUGHPUT if args.tiny else []
    result = args.out / f"{name}.json"
    command = [sys.executable, "-m", "bench.gpu", "--json", str(result), *options, *sizes]
    status, seconds = run_logged(command, ROOT, args.out / f"{name}.log", seconds, env)
    return {"status": status, "seconds": seconds, "runs": json.loads(result.read_text()) if result.exists() else []}


def settings(args, env):
    return throughput(args, env, "settings", ("--settings", "--steps", "40"), seconds=360)


def speed(args, env):  # the changes that might raise the 124M step's MFU
    return throughput(args, env, "speed", ("--speed", "--steps", "60"), seconds=480)


def workspace(args, overrides=()):
    """A repository of this checkout in a temporary folder, params.yaml with `overrides` (and --tiny's)."""
    directory = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "project"
    directory.mkdir()
    make_repo(directory)
    with_overrides(directory, *overrides, *([TINY_PARAMS] if args.tiny else []))
    return directory


def repro(
    args,
    env,
    name="repro",
    overrides=(),
    seconds=240,
    command=("dvc", "repro"),
    *,
    directory=None,
    mirror=None,
    runs=(("", "metrics"),),
    pipelines=(),
):
    """`command` in `directory` (by default a new workspace whose ../shared is the mirror); the figures
    of each run, as (name prefix, metrics folder) of `runs`, and whether `dvc status` of `pipelines`
    (all by default) is clean after it."""
    directory = directory or workspace(args, overrides)
    mirror = mirror or shared_beside(directory, args.mirror)
    env = dict(env, FETCH_MIRROR=f"http://az.lib.ru/={mirror.as_uri()}/")
    log = args.out / f"{name}.log"
    status, seconds = run_logged([sys.executable, "-m", *command], directory, log, seconds, env)
    row = {"status": status, "seconds": seconds}
    stage_lines = re.findall(r"(\w+): ([\d.]+)s, peak RSS (\d+) MiB", log.read_text(errors="replace"))
    row["stages"] = {stage: {"seconds": float(s), "peak_rss_mib": int(m)} for stage, s, m in stage_lines}
    for prefix, metrics_dir in runs:
        for metrics in ("train_cost.json", "eval.json"):
            if (directory / metrics_dir / metrics).exists():
                row[prefix + metrics.removesuffix(".json")] = json.loads(
                    (directory / metrics_dir / metrics).read_text()
                )
    if status == 0:
        check = subprocess.run(
            [sys.executable, "-m", "dvc", "status", "--quiet", *pipelines], cwd=directory, env=env, capture_output=True
        )
        row["dvc_status_clean"] = check.returncode == 0
    samples = directory / dict(runs)[""] / "samples.md"
    if samples.exists():
        shutil.copy(samples, args.out / f"{name}-samples.md")
    return row


def preset(args, env):
    """The one-GPU preset: train for at most 5 minutes, with the data prep, evaluate and sample around it."""
    return repro(args, env, "preset", [yaml.safe_load(PRESET.read_text(encoding="utf-8"))], seconds=420)


def first_text(pattern, shared):
    """The first file a ../shared/ pattern matches in `shared`, as a ../shared/ path."""
    first = sorted(glob.glob(str(shared / pattern.removeprefix("../shared/"))))[0]
    return "../shared/" + Path(first).relative_to(shared).as_posix()


def recipe(args, env):
    """recipes/one-gpu/pipeline.yaml as its dvc.yaml: the base, then fine-tuning, evaluate and sample
    (--tiny: tiny presets, one short author as the base's texts, one text per group)."""
    directory = workspace(args)
    shutil.copy(directory / PIPELINE, directory / RECIPE)
    if args.tiny:
        tiny_run = {**TINY_PARAMS["train"], "patience": 0}
        groups = yaml.safe_load((directory / "configs/presets/style-groups.yaml").read_text(encoding="utf-8"))
        first_texts = {name: [first_text(p[0], args.shared)] for name, p in groups["groups"]["sources"].items()}
        tiny = {
            "configs/presets/ruslit-base.yaml": {"fetch": {"urls": ["../shared/corpus/ruslit/prose/Lermontov/*.txt"]}},
            "recipes/one-gpu/base.yaml": {**TINY_PARAMS, "train": tiny_run},
            "recipes/one-gpu/finetune.yaml": {**TINY_PARAMS, "train": tiny_run},
            "configs/presets/style-groups.yaml": {"groups": {"sources": first_texts}},
        }
        for preset_file, values in tiny.items():
            with_preset_values(directory, preset_file, values)
    return repro(
        args,
        env,
        "recipe",
        seconds=420,
        command=("dvc", "repro", RECIPE),
        directory=directory,
        mirror=shared_beside(directory, args.shared) / "mirror/az.lib.ru",  # ../shared: the whole shared folder
        runs=(("base-", "metrics/one-gpu/base"), ("", "metrics/one-gpu")),
        pipelines=(RECIPE,),
    )


def tutorial(args, env):
    """The tutorial's GPT-2 124M preset through `dvc exp run`, bounded to TUTORIAL_STEPS (and, --tiny,
    to the tiny model: set after the preset's own values)."""
    bounds = [
        TUTORIAL_STEPS,
        *([{key: TINY_PARAMS[key] for key in ("tokenizer", "tokenize", "model")}] if args.tiny else []),
    ]
    settings = [
        argument
        for bound in bounds
        for section, values in bound.items()
        for key, value in values.items()
        for argument in ("-S", set_argument(f"{section}.{key}", value))
    ]
    return repro(
        args,
        env,
        "tutorial",
        seconds=240,
        command=("tools.preset", str(TUTORIAL_PRESET), "--run", "tutorial-124m", *settings),
    )


def tests(args, env):
    train_tests = ["tests/test_train.py", "tests/test_train_plan.py", "tests/test_train_resume.py"]
    selection = (
        [*train_tests, "-k", "gpu"] if args.tiny else [*train_tests, "tests/test_evaluate.py", "tests/test_sample.py"]
    )
    log = args.out / "tests.log"
    side_by_side = ["-n", "3"] if importlib.util.find_spec("xdist") else []  # pytest-xdist, where installed
    status, seconds = run_logged(
        [sys.executable, "-m", "pytest", "-q", "-rfs", "--durations=8", *side_by_side, *selection], ROOT, log, 300, env
    )
    last_line = (log.read_text(errors="replace").splitlines() or [""])[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last_line)}
    return {"status": status, "seconds": seconds, **counts}


def run_figures(run):
    """One bench.gpu row in words (the TF32 rows have no MFU: TF32's peak is not plain fp32's)."""
    if "error" in run:  # a kernel the GPU lacks
        return f"{run['variant']}: {run['error']}"
    mfu = (
        f"MFU {run['mfu_%']}% of {run['peak_gflops']} GFLOP/s {run['mfu_check']}, " if run["mfu_%"] is not None else ""
    )
    return (
        f"{run['variant']}: {run['tokens_per_sec']} tok/s, {mfu}peak {run['peak_gib']} GiB, "
        f"warm-up {run['warmup_s']} s ({run['config']}, batch {run['batch']})"
    )


def training_row(name, r, prefix):
    """A pipeline step's training in words: time, memory, the step kept, and (not for a recipe's base,
    prefix 'base-') bits per char, style gap and whether `dvc status` was clean after it."""
    cost = r.get(f"{prefix}train_cost", {})
    kept = cost.get("outcome") or {}
    gap = r.get("eval", {}).get("style_gap", {}).get("mean")
    return {
        "step": f"{name} {prefix.rstrip('-')}".strip(),
        "status": r["status"],
        "seconds": r["seconds"],
        "figures": f"train {cost.get('actual', {}).get('seconds')} s "
        f"(planned {cost.get('estimate', {}).get('seconds')}), "
        f"peak {cost.get('actual', {}).get('peak_gib')} GiB (planned {cost.get('estimate', {}).get('peak_gib')}), "
        f"step {kept.get('kept_step')} of {kept.get('steps')} kept, "
        + (
            f"its val {kept.get('kept_eval_loss')} loss"
            if prefix
            else f"val {r.get('eval', {}).get('bits_per_char')} bits/char, style gap {gap}, "
            f"dvc status clean: {r.get('dvc_status_clean')}"
        ),
    }


def summary(results):
    rows = []
    for name in ("throughput", "settings", "speed"):
        t = results.get(name, {})
        figures = [run_figures(run) for run in t.get("runs", [])]
        rows += (
            [
                {"step": name, "status": t["status"], "seconds": t["seconds"], "figures": text}
                for text in figures or [""]
            ]
            if t
            else []
        )
    for name in ("repro", "tutorial", "preset", "recipe"):
        r = results.get(name)
        # the recipe's base has a row of its own, as far as it got
        rows += [training_row(name, r, p) for p in ("base-", "") if r and (not p or f"{p}train_cost" in r)]
    if "tests" in results:
        t = results["tests"]
        rows.append(
            {
                "step": "tests",
                "status": t["status"],
                "seconds": t["seconds"],
                "figures": ", ".join(
                    f"{t[k]} {k}" for k in ("passed", "failed", "skipped", "error", "errors") if k in t
                ),
            }
        )
    return pd.DataFrame(rows)


STEPS = {
    "throughput": throughput,
    "repro": repro,
    "tutorial": tutorial,
    "tests": tests,
    "preset": preset,
    "settings": settings,
    "speed": speed,
    "recipe": recipe,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", type=Path, default=ROOT.parent / "shared/mirror/az.lib.ru")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the recipe's ../shared")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gpu_check")
    parser.add_argument("--tiny", action="store_true", help="small sizes, to check the script on a CPU")
    parser.add_argument(
        "--only",
        default="throughput,repro,tutorial,tests",
        help=f"the steps to run, comma-separated, of {','.join(STEPS)}",
    )
    parser.add_argument(
        "--budget", type=float, default=480, help="seconds for all the steps; a step still running then is stopped"
    )
    args = parser.parse_args()
    if not set(args.only.split(",")) <= set(STEPS):
        sys.exit(f"error: --only {args.only}: the steps are {', '.join(STEPS)}")
    global DEADLINE
    DEADLINE = time.perf_counter() + args.budget
    if not (args.mirror / "t").is_dir():
        sys.exit(f"error: no offline mirror at {args.mirror} (expected {args.mirror}/t/...): pass --mirror")
    args.out.mkdir(parents=True, exist_ok=True)
    env = python_env()
    results = {"environment": environment(), "tiny": args.tiny}
    for name in args.only.split(","):
        try:
            results[name] = STEPS[name](args, env)
        except Exception as error:  # one broken step must not hide the others' results
            results[name] = {"status": f"error: {error!r}", "seconds": None}
        (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
        table = summary(results)
        (args.out / "gpu_check.md").write_text(f"{results['environment']}\n\n{table.to_markdown(index=False)}\n")
        print(table.to_string(index=False), flush=True)


if __name__ == "__main__":
    main()

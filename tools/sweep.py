"""Experiments at an equal training-time budget, queued for DVC:

    python -m tools.sweep --seconds 70 base: b8:train.batch_size=8 wide:model.n_embd=192,model.n_head=6
    dvc queue start && dvc queue status      # runs them one after the other
    python -m tools.compare                  # the table

Each RUN is NAME:KEY=VALUE,... over params.yaml (NAME: alone is params.yaml as it is). For each,
the train stage's own plan (tolstoy.training.plan.make_plan, with the model the stage builds) is
timed on this machine (the fastest of two probes), and train.max_steps is set so that steps at
its steady-state speed fill --seconds (warm-up, mostly compilation, is left out: its probe is
noisy, and it does not grow with the run). Every run trains with the precision and compile that
the plan picks for params.yaml here, unless it sets them. `--budget-of-params` takes the
seconds of params.yaml's own steps as the budget. Without --queue the plan is only printed.
"""

import argparse
import copy
import subprocess

import torch
import yaml

from tolstoy.config.params import check_all, read_params
from tolstoy.model.build import loss_only, scratch_model
from tolstoy.training.plan import make_plan, total_steps
from tools.preset import set_argument


def parse_run(text):
    name, _, assignments = text.partition(":")
    overrides = {}
    for assignment in filter(None, assignments.split(",")):
        key, _, value = assignment.partition("=")
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def with_overrides(params, overrides):
    params = copy.deepcopy(params)
    for key, value in overrides.items():
        section, leaf = key.split(".", 1)
        params[section][leaf] = value
    check_all(params)
    return params


def timed_plan(params):
    """The train stage's plan for these params (a model from scratch at their vocabulary size)."""
    checked = check_all(params)
    torch._dynamo.reset()  # each plan compiles afresh, as the stage does in its own process
    torch.manual_seed(checked.train.seed)
    model = loss_only(
        scratch_model(checked.model, checked.tokenizer.vocab_size, 0, 0, checked.train.attn_implementation)
    )
    steps = total_steps(checked.train, 1, 1)
    return make_plan(model, checked.train, checked.tokenize.block_size, steps)


# What a step's time depends on: runs that differ only elsewhere (learning rate, schedule) share a timing.
SPEED_KEYS = (
    "model.",
    "tokenizer.vocab_size",
    "tokenize.block_size",
    "train.batch_size",
    "train.grad_accum",
    "train.precision",
    "train.compile",
    "train.attn_implementation",
)


def seconds_per_step(params, timings, probes=2):
    """Steady-state seconds per step by the plan: the fastest of `probes` probes (noise only ever adds time)."""
    key = tuple(
        (f"{section}.{leaf}", str(value))
        for section, values in params.items()
        for leaf, value in values.items()
        if f"{section}.{leaf}".startswith(SPEED_KEYS)
    )
    if key not in timings:
        timings[key] = min(timed_plan(params).seconds_per_step for _ in range(probes))
    return timings[key]


def steps_within(seconds, per_step, multiple=10):
    return max(multiple, int(seconds / per_step) // multiple * multiple)


def queue(name, overrides):
    command = ["dvc", "exp", "run", "--queue", "-n", name]
    for key, value in overrides.items():
        command += ["-S", set_argument(key, value)]
    subprocess.run(command, check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "runs", nargs="+", type=parse_run, metavar="RUN", help="NAME:KEY=VALUE,KEY=VALUE (params.yaml keys)"
    )
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--seconds", type=float, help="training-time budget of every run, by the plan")
    budget.add_argument("--budget-of-params", action="store_true", help="the plan's seconds for params.yaml as it is")
    parser.add_argument("--queue", action="store_true", help="queue the runs (dvc exp run --queue)")
    args = parser.parse_args()
    params = read_params()
    chosen = timed_plan(params)  # what the stage picks here for params.yaml: every run trains with it
    fixed = {"train.precision": chosen.precision, "train.compile": chosen.compile}
    timings = {}
    seconds = args.seconds or total_steps(check_all(params).train, 1, 1) * seconds_per_step(
        with_overrides(params, fixed), timings
    )
    print(
        f"budget: {seconds:.1f} s of training per run, by the plan; every run in "
        f"{chosen.precision}{'+compile' * chosen.compile}"
    )
    print(f"{'run':<12} {'ms/step':>8} {'steps':>6} {'tokens':>10}  settings")
    for name, overrides in args.runs:
        overrides = {**fixed, **overrides}
        run_params = with_overrides(params, overrides)
        per_step = seconds_per_step(run_params, timings)
        settings = {**overrides, "train.max_steps": steps_within(seconds, per_step)}
        tokens = (
            settings["train.max_steps"]
            * run_params["train"]["batch_size"]
            * run_params["train"]["grad_accum"]
            * run_params["tokenize"]["block_size"]
        )
        print(
            f"{name:<12} {1000 * per_step:>8.1f} {settings['train.max_steps']:>6} {tokens:>10,}  "
            + " ".join(f"{k}={v}" for k, v in settings.items())
        )
        if args.queue:
            queue(name, settings)


if __name__ == "__main__":
    main()

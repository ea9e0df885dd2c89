"""Helpers of the tests: tiny params, stages called in this process, subprocesses with the
project's environment, git repositories of this working tree and the real `dvc` CLI in them."""

import random
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from filelock import FileLock
from safetensors.torch import load_file

from bench import sites
from bench.workspace import ROOT, python_env, stage_command, with_overrides, write_params
from tolstoy.files import read_json

SHARED = ROOT.parent / "shared"


def tiny_params(urls):
    """The repository's params.yaml, shrunk so the whole pipeline runs in seconds."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["fetch"].update(
        urls=urls, delay=0, retries=1, backoff=0.05, backoff_max=1, connect_timeout=2, read_timeout=2
    )
    params["tokenizer"].update(vocab_size=400)
    params["tokenize"].update(block_size=32, span_chars=3000, val_fraction=0.1)
    params["model"].update(n_layer=1, n_head=2, n_embd=32, n_positions=64)
    # fp32: tests that compare numbers compare exact arithmetic, on every CPU (auto would pick bf16 where it is native)
    params["train"].update(
        max_steps=8,
        batch_size=4,
        warmup_steps=2,
        eval_steps=4,
        save_steps=4,
        logging_steps=2,
        eval_blocks=8,
        compile=False,
        precision="fp32",
        accelerate_config="configs/accelerate/single.yaml",
    )  # see with_configs
    params["evaluate"].update(max_blocks=16)
    params["sample"].update(prompts=["Пьер закашлялся и", "Наташа"], max_new_tokens=10)
    return params


def with_configs(directory):
    """`directory` with a copy of configs/accelerate, where train.accelerate_config must name a file."""
    shutil.copytree(ROOT / "configs/accelerate", Path(directory) / "configs/accelerate", dirs_exist_ok=True)
    return directory


def call_stage(name):
    """Call a stage's main() in the current directory with dvc.yaml's paths, in this process (a StageError
    propagates). For train that is the training process's body, which the stage's command launches."""
    module = __import__(f"stages.{name}", fromlist=["main"])
    paths = stage_command(name)[3:]
    module.train_process(module.arguments(paths)) if name == "train" else module.main(paths)


def free_port():
    """A free port below the ephemeral range. A client that retries a connection to an ephemeral
    port before its server listens can be given that very port as its own and connect to itself
    (TCP simultaneous open), and the server then cannot bind it."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    for port in random.sample(range(10000, low), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in 10000-{low - 1}")


def accelerate_config(directory, name, saved_as=None, **changes):
    """A copy of configs/accelerate/<name> in `directory`'s configs/accelerate (as `saved_as`) on a free port
    (tests may run side by side), with `changes`; its path in `directory`, as train.accelerate_config names it."""
    config = yaml.safe_load((ROOT / "configs/accelerate" / name).read_text())
    config.update({"main_process_port": free_port()} if "main_process_port" in config else {}, **changes)
    path = Path("configs/accelerate") / (saved_as or name)
    (Path(directory) / path).parent.mkdir(parents=True, exist_ok=True)
    (Path(directory) / path).write_text(yaml.safe_dump(config))
    return str(path)


def file_bytes(directory, roots):
    """The bytes of every file under `roots` (files or folders, relative to directory), by relative path."""
    paths = [directory / root for root in roots]
    return {
        str(f.relative_to(directory)): f.read_bytes()
        for p in paths
        for f in ([p] if p.is_file() else sorted(p.rglob("*")))
        if f.is_file()
    }


def damage(path, how="cut short"):
    """What a full disk or a failed copy leaves: the file's first half, or one bit flipped."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "cut short" else data[:100] + bytes([data[100] ^ 1]) + data[101:])


def run(cmd, cwd, check=True, env=None):
    result = subprocess.run(cmd, cwd=cwd, env=env or python_env(), capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def ran_stages(output):
    """The stages a `dvc repro` or `dvc exp run` output says it ran, in order."""
    return re.findall(r"Running stage '(\w+)'", output)


def repro_output(reproduced):
    """What the shared tiny run's `dvc repro` printed (saved beside its repository)."""
    return (reproduced.parent / f"{reproduced.name}.repro.txt").read_text(encoding="utf-8")


def dvc(directory, *args, env):
    return run(["dvc", *args], directory, env=env)


def set_param(directory, section, key, value):
    with_overrides(directory, {section: {key: value}})


def built_once(tmp_path_factory, worker_id, name, build):
    """The directory `build(directory)` fills, built once for the whole test run: under pytest-xdist
    the first worker to ask builds it, under a lock, in the run's temporary directory that all
    workers share, and the others wait for it. Tests only read it, or copy it."""
    if worker_id == "master":  # one process: its own temporary directory
        directory = tmp_path_factory.mktemp(name)
        build(directory)
        return directory
    shared = tmp_path_factory.getbasetemp().parent
    directory = shared / name
    with FileLock(shared / f"{name}.lock"):
        if not (shared / f"{name}.done").exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            build(directory)
            (shared / f"{name}.done").touch()
    return directory


def copy_of(reproduced, directory):
    """A private copy of the reproduced repository (its DVC cache included); (directory, env)."""
    shutil.copytree(reproduced[0], directory, symlinks=True)
    return directory, reproduced[1]


# Training runs of the tiny project
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (python -m bench.gpu_check runs these on one)"
)


def params_with(**sections):
    params = tiny_params([])
    for section, values in sections.items():
        params[section].update(values)
    return params


def weights(directory="models/model"):
    return load_file(f"{directory}/model.safetensors")


def differing_weights(a, b, rtol, atol):
    """Names of the tensors of state dict `a` not close to `b`'s, for runs that sum in other orders
    (micro-batches, processes). The attention's key bias (the middle third of c_attn.bias) is left
    out: softmax ignores a constant added to all of a query's scores, so its gradient is rounding
    noise, which Adam scales to steps of the learning rate's size, differently for each order."""

    def comparable(name, tensor):
        return (
            torch.cat([tensor[: len(tensor) // 3], tensor[2 * len(tensor) // 3 :]])
            if name.endswith("attn.c_attn.bias")
            else tensor
        )

    return [
        name
        for name in a
        if not torch.allclose(comparable(name, a[name]), comparable(name, b[name]), rtol=rtol, atol=atol)
    ]


def train_copy(built, directory, **train_values):
    """A private copy of the built project, without checkpoints, with its own train params."""
    shutil.copytree(built, directory, ignore=shutil.ignore_patterns("checkpoints"))
    write_params(directory, params_with(train=train_values))
    return directory


def eval_loss(directory, monkeypatch):
    monkeypatch.chdir(directory)
    call_stage("evaluate")
    return read_json("metrics/eval.json")["val_loss"]


def loss_curve(directory):
    rows = (Path(directory) / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
    return [float(row.split("\t")[1]) for row in rows]


# Texts of other "authors"
def foreign(seed, n):
    """n paragraphs of the fixture pages' words, each word reversed: another author's vocabulary."""
    return [" ".join(word[::-1] for word in paragraph.split()) for paragraph in sites.paragraphs(seed, n)]


FOREIGN = foreign("foreign", 120)


def write_author(directory, works):
    """Each work (a list of paragraphs) as a .txt file in `directory`; the pattern that lists them."""
    directory.mkdir(parents=True)
    for i, paragraphs in enumerate(works):
        (directory / f"work{i}.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    return str(directory / "*.txt")

"""Training over several machines, as the README's "Several machines" section runs it, with two
"machines" on 127.0.0.1: two checkouts, one gloo process each; rank 0 runs `dvc repro`, the
other checkout runs the worker command."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import (
    accelerate_config,
    copy_of,
    differing_weights,
    dvc,
    file_bytes,
    free_port,
    python_env,
    ran_stages,
    run,
    set_param,
)
from tolstoy import StageError

pytestmark = pytest.mark.slow  # end to end: several training processes and machines

WORKER = [sys.executable, "-m", "tools.train_worker", "configs/accelerate/two-nodes.yaml"]


def machine(reproduced, directory, rank, port, **train):
    """A checkout set up as machine `rank` of two: its copy of cpu-ddp.yaml, batch halved."""
    directory, env = copy_of(reproduced, directory)
    accelerate_config(
        directory,
        "cpu-ddp.yaml",
        "two-nodes.yaml",
        num_machines=2,
        num_processes=2,
        machine_rank=rank,
        main_process_ip="127.0.0.1",
        main_process_port=port,
    )
    for key, value in {"accelerate_config": "configs/accelerate/two-nodes.yaml", "batch_size": 2, **train}.items():
        set_param(directory, "train", key, value)
    return directory, env


def workspace(directory):
    """Every file of a checkout but git's own."""
    return file_bytes(directory, [path.name for path in directory.iterdir() if path.name != ".git"])


def start_worker(directory, wait=120):
    return subprocess.Popen(
        [*WORKER, "--wait", str(wait)],
        cwd=directory,
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def alongside(worker, command, directory, env, timeout=600):
    """Run rank 0's command while the worker runs; (rank 0's result, the worker's stderr). Rank 0
    is killed a minute after a worker that failed (it would wait for the worker for minutes)."""
    rank0 = subprocess.Popen(
        command,
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while rank0.poll() is None and (worker.poll() in (None, 0)) and time.monotonic() < deadline:
        time.sleep(0.5)
    try:
        rank0.wait(timeout=60)  # time to report its own error
    except subprocess.TimeoutExpired:
        os.killpg(rank0.pid, signal.SIGKILL)
    out, err = rank0.communicate()
    try:
        worker_out, worker_err = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # still waiting for a rank 0 that has ended: rank 0's output says why
        worker.kill()
        worker_out, worker_err = worker.communicate()
    return subprocess.CompletedProcess(command, rank0.returncode, out, err), worker_err


def loss_curve(directory):
    rows = (directory / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
    return [float(row.split("\t")[1]) for row in rows]


def test_two_machines_train_as_one_and_only_rank_0_changes(reproduced, tmp_path):
    port = free_port()
    rank0, env = machine(reproduced, tmp_path / "rank0", 0, port)
    other, _ = machine(reproduced, tmp_path / "rank1", 1, port)
    before = workspace(other)
    repro, err = alongside(start_worker(other), ["dvc", "repro"], rank0, env)
    assert repro.returncode == 0, f"{repro.stderr[-2000:]}\nworker:\n{err[-2000:]}"
    assert "worker: training finished" in err and ran_stages(repro.stdout)[-3:] == ["train", "evaluate", "sample"]
    assert workspace(other) == before  # nothing written, nothing removed
    assert "up to date" in dvc(rank0, "status", env=env).stdout
    single = reproduced[0]  # one process, batch 4: the same global batch
    assert loss_curve(rank0) == pytest.approx(loss_curve(single), rel=1e-3)
    two, one = load_file(rank0 / "models/model/model.safetensors"), load_file(single / "models/model/model.safetensors")
    assert differing_weights(two, one, rtol=1e-3, atol=1e-5) == []


def test_machines_with_other_params_stop_together_naming_the_difference(reproduced, tmp_path):
    port = free_port()
    rank0, env = machine(reproduced, tmp_path / "rank0", 0, port)
    other, _ = machine(reproduced, tmp_path / "rank1", 1, port, seed=7)
    worker = start_worker(other)
    repro, err = alongside(worker, ["dvc", "repro", "train"], rank0, env)
    assert repro.returncode != 0 and worker.returncode == 2
    assert "process 1: its train differ from rank 0's" in repro.stderr + repro.stdout
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("error: training processes disagree with rank 0: process 1: its train differ")
    )


def test_a_worker_without_rank_0_stops_with_a_clear_error(reproduced, tmp_path):
    other, _ = machine(reproduced, tmp_path / "rank1", 1, free_port())
    started = time.monotonic()
    result = run([*WORKER, "--wait", "2"], other, check=False)
    assert result.returncode == 2 and time.monotonic() - started < 60
    assert result.stderr.strip().splitlines()[-1].startswith("error: rank 0 did not answer at 127.0.0.1:")


def test_rank_0_config_is_not_a_worker_config(reproduced, tmp_path):
    rank0, _ = machine(reproduced, tmp_path / "rank0", 0, free_port())
    result = run([*WORKER, "--wait", "2"], rank0, check=False)
    assert result.returncode == 2 and "machine_rank=0 of num_machines=2 is not a worker" in result.stderr


def training_process(launcher):
    """The training process (stages.train) that a worker command started, once it runs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = [
            p
            for p in psutil.Process(launcher.pid).children(recursive=True)
            if "--process" in p.cmdline() and "accelerate.commands.launch" not in p.cmdline()
        ]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError("the worker started no training process")


def test_a_worker_killed_mid_run_stops_rank_0_naming_it_and_the_next_run_resumes(reproduced, tmp_path):
    port, timeout = free_port(), 30
    settings = dict(
        max_steps=200, save_steps=100, eval_steps=10000, keep="last", logging_steps=100, peer_timeout=timeout
    )
    rank0, env = machine(reproduced, tmp_path / "rank0", 0, port, **settings)
    other, _ = machine(reproduced, tmp_path / "rank1", 1, port, **settings)
    worker = start_worker(other)
    repro = subprocess.Popen(
        ["dvc", "repro"], cwd=rank0, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    victim = training_process(worker)
    while not (rank0 / "models/checkpoints/checkpoint-100/sealed.json").exists():
        assert repro.poll() is None, repro.stdout.read()[-3000:]
        time.sleep(0.05)
    victim.kill()
    killed = time.monotonic()
    output, _ = repro.communicate(timeout=timeout + 120)
    stopped_after = time.monotonic() - killed
    worker.communicate(timeout=60)
    assert repro.returncode != 0 and stopped_after < timeout + 60, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: training process 0 of 2: process 1 stopped"), output[
        -3000:
    ]
    assert not (rank0 / "models/checkpoints/checkpoint-200").exists()

    # The worker needs rank 0's checkpoints to resume (tests/test_peers.py: what it says without them)
    shutil.rmtree(other / "models/checkpoints")
    shutil.copytree(rank0 / "models/checkpoints", other / "models/checkpoints")
    again, err = alongside(start_worker(other), ["dvc", "repro", "train"], rank0, env)
    assert again.returncode == 0, f"{again.stderr[-2000:]}\nworker:\n{err[-2000:]}"
    assert re.search(r"resuming from models/checkpoints/checkpoint-\d+", again.stdout + again.stderr)
    assert (rank0 / "models/checkpoints/checkpoint-200").is_dir()


def test_rank_0_without_its_workers_stops_within_the_peer_timeout(reproduced, tmp_path):
    rank0, env = machine(reproduced, tmp_path / "rank0", 0, free_port(), peer_timeout=15)
    started = time.monotonic()
    result = run(["dvc", "repro", "train"], rank0, check=False, env=env)
    waited = time.monotonic() - started
    assert result.returncode != 0 and waited < 15 + 60, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert (
        errors
        == [
            "error: 1 of 2 machines joined within train.peer_timeout (15s): start "
            "`python -m tools.train_worker configs/accelerate/two-nodes.yaml` on every other machine of "
            "configs/accelerate/two-nodes.yaml"
        ]
        and "Traceback" not in result.stderr
    )


def test_the_roll_call_names_the_ranks_that_do_not_answer(monkeypatch):
    """On a real rendezvous store: rank 0 and rank 2 of three answer, rank 1 does not."""
    from datetime import timedelta

    from tolstoy.training import distributed as peers

    monkeypatch.setattr(peers, "ROLL_CALL_SECONDS", 0.5)
    store = torch.distributed.TCPStore("127.0.0.1", free_port(), 1, True, timedelta(seconds=10))
    store.set(f"{peers.ALIVE}2", "1")
    assert peers.missing_ranks(store, world_size=3, rank=0) == [1]
    store.set(f"{peers.ALIVE}1", "1")
    assert peers.missing_ranks(store, world_size=3, rank=0) == []


@pytest.mark.parametrize("fails", [False, True])
def test_a_process_closes_its_group_however_it_ends(tmp_path, fails):
    """A process that exits with its group open can abort at shutdown, printing "terminate called
    without an active exception" after its error line (about half the time, in a 2-process check)."""
    from tolstoy.training import distributed as peers

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    with pytest.raises(StageError) if fails else contextlib.nullcontext(), peers.leaving_together():
        assert peers.in_group()
        if fails:
            raise StageError("training processes disagree with rank 0")
    assert not torch.distributed.is_initialized()

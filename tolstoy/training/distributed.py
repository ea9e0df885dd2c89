"""The processes of a training run: they agree with rank 0 before they train, and those that
lose a peer stop together, naming it.

Every process checks that its fingerprint is rank 0's and that it has the checkpoint rank 0
resumes from; any that does not stops all of them, each with one line.

A process that dies (killed, out of memory, its machine gone) leaves the others blocked in a
collective until the process group's timeout (train.peer_timeout), or failing at once on a
closed connection. Either way each survivor reports, through the rendezvous store, that it is
alive; the ranks that never report are named in one error line.

What processes send each other (fingerprints, settings, problems) travels as JSON bytes in tensors,
never as pickles, which run code of the sender's choosing where they are loaded.
"""

import contextlib
import json
import os
import time
from pathlib import Path

import torch

from tolstoy import StageError
from tolstoy.training.checkpoints import is_final, seal_problem

ALIVE = "tolstoy/alive/"
ROLL_CALL_SECONDS = 10


def in_group():
    """Whether this process is one of a run's joined processes (a process group is initialized)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def exchange_device():
    """Where the tensors of a collective live: NCCL moves CUDA tensors only."""
    nccl = "nccl" in str(torch.distributed.get_backend())
    return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


def encoded(data, device):
    """`data` (dicts, lists, strings, numbers, booleans, None) as a tensor of JSON bytes."""
    return torch.frombuffer(bytearray(json.dumps(data).encode("utf-8")), dtype=torch.uint8).to(device)


def decoded(tensor):
    return json.loads(tensor.cpu().numpy().tobytes().decode("utf-8"))


def broadcast_data(data, src=0):
    """Rank src's `data` on every process: its length is sent first, then its bytes."""
    device, sending = exchange_device(), torch.distributed.get_rank() == src
    payload = encoded(data, device) if sending else None
    length = torch.tensor([len(payload) if sending else 0], dtype=torch.int64, device=device)
    torch.distributed.broadcast(length, src)
    buffer = payload if sending else torch.empty(int(length), dtype=torch.uint8, device=device)
    torch.distributed.broadcast(buffer, src)
    return decoded(buffer)


def gather_data(data):
    """Every process's `data`, in rank order, on every process: the lengths first, then the bytes, each
    padded to the longest."""
    device, world_size = exchange_device(), torch.distributed.get_world_size()
    payload = encoded(data, device)
    lengths = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size)]
    torch.distributed.all_gather(lengths, torch.tensor([len(payload)], dtype=torch.int64, device=device))
    padded = torch.zeros(max(int(n) for n in lengths), dtype=torch.uint8, device=device)
    padded[: len(payload)] = payload
    buffers = [torch.empty_like(padded) for _ in range(world_size)]
    torch.distributed.all_gather(buffers, padded)
    return [decoded(buffer[: int(n)]) for buffer, n in zip(buffers, lengths)]


def missing_ranks(store, world_size, rank):
    """Ranks that have not said they are alive within ROLL_CALL_SECONDS (this one says so first)."""
    store.set(f"{ALIVE}{rank}", "1")
    deadline = time.monotonic() + ROLL_CALL_SECONDS
    while True:
        missing = [r for r in range(world_size) if not store.check([f"{ALIVE}{r}"])]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


def lost_a_peer(error):
    """Whether `error` is a collective that failed: NCCL's are DistErrors; gloo reports a closed
    connection or a timeout as a RuntimeError raised in its own transport code."""
    return (
        in_group()
        and torch.distributed.get_world_size() > 1
        and (isinstance(error, torch.distributed.DistError) or "gloo/" in str(error))
    )


@contextlib.contextmanager
def watched():
    """Turn a failed collective in a run of several processes into one StageError naming the lost ranks."""
    try:
        yield
    except RuntimeError as error:  # DistError is one
        if not lost_a_peer(error):
            raise
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        try:
            missing = missing_ranks(torch.distributed.distributed_c10d._get_default_store(), world_size, rank)
        except Exception:  # the store lives with rank 0's launcher: gone with it
            missing = None
        lost = (
            "lost contact with rank 0's machine"
            if missing is None
            else "a collective failed"
            if not missing
            else f"process{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))} stopped"
        )
        raise StageError(
            f"training process {rank} of {world_size}: {lost} ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0][:300]}); "
            "the others stop too: once every machine is back, `dvc repro` resumes from the last verified checkpoint"
        ) from None


@contextlib.contextmanager
def leaving_together():
    """Close the process group before the process exits, as torch requires: with the group open, a
    process can abort at interpreter shutdown ("terminate called without an active exception")
    after its error line. A process that succeeds first waits for the others; one that fails
    closes its own group at once (a local shutdown: the others may be gone or stopping too)."""
    try:
        yield
        if in_group():
            torch.distributed.barrier()
    finally:
        if in_group():
            torch.distributed.destroy_process_group()


def copy_problem(checkpoint):
    """Why this process cannot use its copy of rank 0's checkpoint. The first process of each machine
    other than rank 0's verifies the copy (rank 0 verified its own)."""
    if not checkpoint or is_final(checkpoint):  # rank 0 restores the finished run alone
        return None
    if not checkpoint.is_dir():
        return f"it lacks {checkpoint}, from which rank 0 resumes (copy it there, or share {checkpoint.parent})"
    if int(os.environ.get("LOCAL_RANK", "0")) or not int(os.environ.get("GROUP_RANK", "0")):
        return None
    problem = seal_problem(checkpoint)
    return f"its copy of {checkpoint} fails verification: {problem} (copy it again from rank 0)" if problem else None


def agree_with_main(current, checkpoint):
    """Rank 0's checkpoint to resume from, on every process; StageError on every process when any
    of them has other params, code, tokenizer, data or runtime than rank 0, or lacks the checkpoint."""
    if not in_group():
        return checkpoint
    main, checkpoint = broadcast_data([current, str(checkpoint) if checkpoint else None])
    checkpoint = Path(checkpoint) if checkpoint else None
    differs = [key for key in current if current[key] != main.get(key)]
    problem = (
        f"its {', '.join(differs)} differ from rank 0's (run every machine with the same checkout and `dvc pull`)"
        if differs
        else copy_problem(checkpoint)
    )
    problems = gather_data(problem)  # every process stops, none waits for the others
    stated = [f"process {rank}: {text}" for rank, text in enumerate(problems) if text]
    if stated:
        raise StageError("training processes disagree with rank 0: " + "; ".join(stated))
    return checkpoint

"""Training processes that lose a peer stop together, naming it.

A process that dies (killed, out of memory, its machine gone) leaves the others blocked in a
collective until the process group's timeout (train.peer_timeout), or failing at once on a
closed connection. Either way each survivor reports, through the rendezvous store, that it is
alive; the ranks that never report are named in one error line.
"""
import contextlib
import time

import torch

from stages.common import StageError

ALIVE = "tolstoy/alive/"
ROLL_CALL_SECONDS = 10


def in_group():
    """Whether this process is one of a run's joined processes (a process group is initialized)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


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
    return in_group() and torch.distributed.get_world_size() > 1 and (isinstance(error, torch.distributed.DistError) or "gloo/" in str(error))


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
        lost = ("lost contact with rank 0's machine" if missing is None else "a collective failed" if not missing
                else f"process{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))} stopped")
        raise StageError(f"training process {rank} of {world_size}: {lost} ({type(error).__name__}: {str(error).strip().splitlines()[0][:300]}); "
                         "the others stop too: once every machine is back, `dvc repro` resumes from the last verified checkpoint") from None


def leave_together():
    """Every process waits for the others, then closes its process group, as torch requires before
    exit: a process that exits with its group open can abort at interpreter shutdown."""
    if in_group():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()

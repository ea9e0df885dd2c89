"""What the processes of a training run send each other: plain data (JSON bytes in tensors) over a
real two-process gloo group on 127.0.0.1, never pickles; and what a worker says of its copy of the
checkpoint rank 0 resumes from."""

import json
import os
import pickle
import re
import shutil

import pytest
import torch
import torch.multiprocessing

from tests.helpers import ROOT, free_port
from tolstoy.training import distributed as peers

FIRST = {
    "model": {"n_layer": 1, "dropout": 0.0, "base": ""},
    "code": {"tolstoy/training/plan.py": "ab" * 32},
    "runtime": [2, "2.13"],
    "text": 'Наташа \u2028 "quoted"',
    "nothing": None,
    "chosen": True,
}


class Planted:
    """What a hostile peer could send a pickle-reading process: loading it creates `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def exchange(rank, port, directory):
    """One process of the group: what it received, written to directory/<rank>.json."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        main = peers.broadcast_data(FIRST if rank == 0 else None)
        everyone = peers.gather_data(None if rank == 0 else f"process {rank}: its train differ" * 40)  # lengths differ
        if rank == 1:  # a hostile peer: the wire format, with a pickle for bytes
            planted = pickle.dumps(Planted(os.path.join(directory, "planted")))
            payload = torch.frombuffer(bytearray(planted), dtype=torch.uint8)
            torch.distributed.broadcast(torch.tensor([len(payload)], dtype=torch.int64), src=1)
            torch.distributed.broadcast(payload, src=1)
            refused = None
        else:
            try:
                refused = repr(peers.broadcast_data(None, src=1))
            except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                refused = type(error).__name__
        with open(os.path.join(directory, f"{rank}.json"), "w", encoding="utf-8") as f:
            json.dump({"main": main, "everyone": everyone, "refused": refused}, f)
    finally:
        torch.distributed.destroy_process_group()


def test_processes_exchange_data_and_refuse_a_pickle(tmp_path):
    torch.multiprocessing.spawn(exchange, args=(free_port(), str(tmp_path)), nprocs=2)
    received = [json.loads((tmp_path / f"{rank}.json").read_text(encoding="utf-8")) for rank in (0, 1)]
    for each in received:
        assert each["main"] == FIRST
        assert each["everyone"] == [None, "process 1: its train differ" * 40]
    assert received[0]["refused"] in ("JSONDecodeError", "UnicodeDecodeError") and not (tmp_path / "planted").exists()


def test_only_plain_data_can_be_sent():
    with pytest.raises(TypeError, match="not JSON serializable"):
        peers.encoded({"checkpoint": ROOT}, torch.device("cpu"))


def test_no_code_exchanges_python_objects():
    """torch's *_object collectives pickle what they send and unpickle what they receive."""
    pattern = re.compile(r"\b(broadcast_object_list|(all_)?gather_object|(scatter|send|recv)_object_list)\b")
    sources = [path for folder in ("stages", "tools", "bench") for path in (ROOT / folder).rglob("*.py")]
    users = [str(path.relative_to(ROOT)) for path in sources if pattern.search(path.read_text(encoding="utf-8"))]
    assert users == []


def test_a_worker_names_a_missing_or_damaged_copy_of_the_checkpoint_rank_0_resumes_from(built, tmp_path, monkeypatch):
    """On another machine (GROUP_RANK 1), its first process verifies its copy of rank 0's checkpoint."""
    checkpoint = tmp_path / "models/checkpoints/checkpoint-4"
    monkeypatch.setenv("GROUP_RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert peers.copy_problem(checkpoint) == (
        f"it lacks {checkpoint}, from which rank 0 resumes (copy it there, or share {checkpoint.parent})"
    )
    shutil.copytree(built / "models/checkpoints/checkpoint-4", checkpoint)
    assert peers.copy_problem(checkpoint) is None
    intact = (checkpoint / "optimizer.pt").read_bytes()
    (checkpoint / "optimizer.pt").write_bytes(intact[:1000])  # a failed copy
    assert peers.copy_problem(checkpoint) == (
        f"its copy of {checkpoint} fails verification: optimizer.pt has 1,000 bytes, {len(intact):,} when saved "
        "(copy it again from rank 0)"
    )
    monkeypatch.setenv("GROUP_RANK", "0")  # rank 0's machine: rank 0 verified its own copy before choosing it
    assert peers.copy_problem(checkpoint) is None

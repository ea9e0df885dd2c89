"""Checkpoints that may be reused: only those made by the same code, params, tokenizer, data and
runtime (stages/training/fingerprint.py), and only while their files verify (stages/training/seal.py).

A checkpoints directory holds `fingerprint.json` (what its checkpoints were made with), Trainer's
`checkpoint-<step>` directories and, once a run has finished, `final/`: the exported model and
the cost record of that run, copied back byte for byte when nothing that determines the result
changed (so a re-run with nothing to do changes no output).
"""
import logging
import os
import shutil
from pathlib import Path

import torch

from stages.common import StageError, atomic_path, log, read_json, write_json
from stages.training.peers import in_group
from stages.training.seal import is_sealed, seal, seal_problem, set_aside

FINAL = "final"


def checkpoint_step(path):
    return int(Path(path).name.split("-")[1])


def latest_checkpoint(checkpoints):
    return max(checkpoints.glob("checkpoint-*"), key=checkpoint_step, default=None)


def sealed_checkpoints(checkpoints):
    """Checkpoints by step; unsealed ones (killed while saving: the seal is written last) removed."""
    sealed = []
    for path in checkpoints.glob("checkpoint-*"):
        if is_sealed(path):
            sealed.append(path)
        else:
            log.info("train: removing incomplete checkpoint %s", path)
            shutil.rmtree(path)
    return sorted(sealed, key=checkpoint_step)


def saved_fingerprint(checkpoints):
    try:
        return read_json(checkpoints / "fingerprint.json")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("train: %s cannot be read (%s): its checkpoints count as made with other settings", checkpoints / "fingerprint.json", error)
        return {}


def ends_run(checkpoint, steps):
    """Whether the run ended at this checkpoint: its last step, or an early stop (saved in its Trainer state)."""
    if checkpoint_step(checkpoint) >= steps:
        return True
    try:
        control = read_json(checkpoint / "trainer_state.json")["stateful_callbacks"]["TrainerControl"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(control["args"].get("should_training_stop"))


def is_final(checkpoint):
    return checkpoint is not None and checkpoint.name == FINAL


def verified_final(checkpoints):
    """`final/` when its files verify, else None (a failing one set aside)."""
    final = checkpoints / FINAL
    if not final.is_dir():
        return None
    if problem := seal_problem(final):
        set_aside(final, problem)
        return None
    return final


def checkpoint_to_resume(checkpoints, current, steps):
    """`final/` when the finished run stands, else the newest checkpoint made with `current`
    settings whose files verify, or None (old ones removed, failing ones set aside).

    The finished run stands while `final/` and the checkpoint the run ended at (its last step, or
    an early stop) both verify; without them (killed while exporting, or set aside) the run
    resumes from the checkpoint before.
    """
    if not checkpoints.exists():
        return None
    saved = saved_fingerprint(checkpoints)
    changed = [key for key in current if saved.get(key) != current[key]]
    if changed:
        log.info("train: starting fresh: checkpoints in %s were made with other %s", checkpoints, ", ".join(changed))
        shutil.rmtree(checkpoints)
        return None
    final, sealed = verified_final(checkpoints), sealed_checkpoints(checkpoints)
    if final and not any(ends_run(checkpoint, steps) for checkpoint in sealed):
        return final  # Trainer deleted the checkpoint it ended at: save_total_limit 1 keeps the best alone
    failed = 0
    for checkpoint in reversed(sealed):
        ends = ends_run(checkpoint, steps)
        if ends and not final:
            continue
        if not (problem := seal_problem(checkpoint)):
            return final if ends else checkpoint
        set_aside(checkpoint, problem)
        failed += 1
        final = None if ends else final
    if failed:
        log.warning("train: no checkpoint in %s verifies: training starts from the first step", checkpoints)
    return None


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
    shared = [current, str(checkpoint) if checkpoint else None]
    torch.distributed.broadcast_object_list(shared)
    main, checkpoint = shared[0], Path(shared[1]) if shared[1] else None
    differs = [key for key in current if current[key] != main.get(key)]
    problem = (f"its {', '.join(differs)} differ from rank 0's (run every machine with the same checkout and `dvc pull`)" if differs
               else copy_problem(checkpoint))
    problems = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(problems, problem)  # every process stops, none waits for the others
    stated = [f"process {rank}: {text}" for rank, text in enumerate(problems) if text]
    if stated:
        raise StageError("training processes disagree with rank 0: " + "; ".join(stated))
    return checkpoint


def mark(checkpoints, current, chosen):
    """Record what the checkpoints about to be written are made with, and the precision and compile chosen."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    write_json(checkpoints / "fingerprint.json", {**current, "chosen": chosen})


def kept_choice(checkpoints, current):
    """The precision and compile chosen by the run whose checkpoints are here, when it was made with
    `current` in all but its precision (so that a resumed or finished run never changes its choice)."""
    saved = saved_fingerprint(checkpoints)
    without_precision = lambda fp: {**fp, "runtime": {k: v for k, v in fp.get("runtime", {}).items() if k != "precision"}}  # noqa: E731
    same = all(without_precision(saved).get(key) == without_precision(current)[key] for key in current)
    return saved.get("chosen") if saved and same else None


def keep_final(checkpoints, model_dir, cost_file):
    """Copy the exported model and the run's cost record beside the checkpoints."""
    with atomic_path(checkpoints / FINAL) as tmp:
        shutil.copytree(model_dir, tmp / "model")
        shutil.copy2(cost_file, tmp / cost_file.name)
        seal(tmp)


def restore_final(checkpoints, model_dir, cost_file):
    """Put the finished run's model and cost record back, byte for byte."""
    final = checkpoints / FINAL
    with atomic_path(model_dir) as tmp:
        shutil.copytree(final / "model", tmp)
    with atomic_path(cost_file) as tmp:
        shutil.copy2(final / cost_file.name, tmp)


class TiedWeightsNotice(logging.Filter):
    """GPT-2 ties lm_head to the input embeddings, so checkpoints do not store it and Trainer's
    resume warns that it is missing; one explanatory line replaces the warning."""

    MESSAGE = "There were missing keys in the checkpoint model loaded: ['lm_head.weight']"

    def filter(self, record):
        if record.getMessage().startswith(self.MESSAGE):
            log.info("train: lm_head.weight is tied to the input embeddings (not stored in checkpoints): restored from them")
            return False
        return True


def quiet_tied_weights_warning():
    logging.getLogger("transformers.trainer").addFilter(TiedWeightsNotice())

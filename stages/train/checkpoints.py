"""Checkpoints that may be reused: only those made by the same code, params, tokenizer, data and
runtime (stages/train/fingerprint.py), and only while their files verify (stages/train/seal.py).

A checkpoints directory holds `fingerprint.json` (what its checkpoints were made with), Trainer's
`checkpoint-<step>` directories and, once a run has finished, `final/`: the exported model and
the cost record of that run, copied back byte for byte when nothing that determines the result
changed (so a re-run with nothing to do changes no output).
"""
import shutil
from pathlib import Path

from stages.common import atomic_path, log, read_json, write_json
from stages.train.seal import is_sealed, seal, seal_problem, set_aside

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


def record_fingerprint(checkpoints, current, chosen):
    """Record what the checkpoints about to be written are made with, and the precision and compile chosen."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    write_json(checkpoints / "fingerprint.json", {**current, "chosen": chosen})


def settings_of_run(checkpoints, current):
    """The precision and compile chosen by the run whose checkpoints are here, when it has the
    fingerprint `current`: a resumed or finished run keeps its choice."""
    saved = saved_fingerprint(checkpoints)
    return saved.get("chosen") if saved and all(saved.get(key) == current[key] for key in current) else None


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

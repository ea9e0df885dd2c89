"""Checkpoints that may be reused: only those made by the same code, params, tokenizer, data and
runtime (the fingerprint below), and only while their files verify (the seals below).

A checkpoints directory holds `fingerprint.json` (what its checkpoints were made with), Trainer's
`checkpoint-<step>` directories and, once a run has finished, `final/`: the exported model and
the cost record of that run, copied back byte for byte when nothing that determines the result
changed (so a re-run with nothing to do changes no output).

Seals: a checkpoint (or the finished run in final/) is trusted only while its files are the ones saved.

When a directory is complete, SEAL records the size and sha256 of each of its files; it is
written last, so a directory without one was never finished. Before a directory is reused its
files are checked against the seal. One that fails (a full disk, a failed copy between machines,
a partial `dvc pull`) is set aside as `corrupt-<name>`, with a warning saying why: never used,
never deleted.

What a training run's weights depend on, as hashes: params, tokenizer, tokens, code, base model and runtime.

Checkpoints are reused only by a run with the same fingerprint.
The precision and compile that `auto` picks are not in it: a run with the same fingerprint keeps
its checkpoints' choice.
"""

import ast
import os
import shutil
from pathlib import Path

import torch
import transformers
from transformers import TrainerCallback

from tolstoy.console import log
from tolstoy.files import atomic_path, file_sha256, read_json, write_json
from tolstoy.model.bases import base_identity

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
        log.warning(
            "train: %s cannot be read (%s): its checkpoints count as made with other settings",
            checkpoints / "fingerprint.json",
            error,
        )
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


SEAL = "sealed.json"


def seal(directory):
    """Record the size and sha256 of every file under `directory`."""
    directory = Path(directory)
    files = {
        str(f.relative_to(directory)): {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
        for f in sorted(directory.rglob("*"))
        if f.is_file() and f.name != SEAL
    }
    write_json(directory / SEAL, files)


def is_sealed(directory):
    return (Path(directory) / SEAL).is_file()


def seal_problem(directory):
    """Why `directory` does not match its seal, or None when every file it lists is there, whole and unchanged.
    Sizes are compared first, for every file, so a cut-short file is found without hashing the rest."""
    directory = Path(directory)
    try:
        files = read_json(directory / SEAL)
    except FileNotFoundError:
        return f"it has no {SEAL} (its save never finished)"
    except (OSError, ValueError) as error:
        return f"its {SEAL} cannot be read ({error})"
    for name, saved in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != saved["bytes"]:
            return f"{name} has {path.stat().st_size:,} bytes, {saved['bytes']:,} when saved"
    for name, saved in files.items():
        if file_sha256(directory / name) != saved["sha256"]:
            return f"{name} is not the file that was saved (sha256 differs)"
    return None


def set_aside(directory, problem):
    """Move a directory that failed verification to a free `corrupt-<name>` beside it."""
    directory = Path(directory)
    target, n = directory.with_name(f"corrupt-{directory.name}"), 1
    while target.exists():
        n += 1
        target = directory.with_name(f"corrupt-{directory.name}-{n}")
    os.replace(directory, target)
    log.warning("train: %s fails verification: %s; set aside as %s", directory, problem, target)


class SealCheckpoints(TrainerCallback):
    """Seals each checkpoint once Trainer has written it (on the process that saves)."""

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            seal(Path(args.output_dir) / f"checkpoint-{state.global_step}")


# Train params that change how a run is observed, saved or supervised, not what it computes.
OBSERVING_PARAMS = {
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "eval_steps",
    "eval_blocks",
    "accelerate_config",
    "peer_timeout",
}
# ... unless the evaluations choose the exported step (train.keep: best) or the last (train.patience).
EVALUATION_PARAMS = {"eval_steps", "eval_blocks", "save_steps"}
PROJECT = Path(__file__).resolve().parents[2]  # the folder that holds this package


def module_file(name):
    """The source file of a module of the project's packages (folders of PROJECT), or None for any other module."""
    if not (PROJECT / name.split(".")[0] / "__init__.py").is_file():
        return None
    path = PROJECT.joinpath(*name.split("."))
    return next((f for f in (path.with_suffix(".py"), path / "__init__.py") if f.is_file()), None)


def project_modules(root):
    """`root` and every project module it imports, directly or not, with their packages (read from the source)."""
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        todo += [name.rsplit(".", 1)[0]] if "." in name else []
        for node in ast.walk(ast.parse(module_file(name).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                todo += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return seen


def code_hashes(root="tolstoy.training.run"):
    """sha256 of the source of every project module the training code imports."""
    files = sorted(module_file(name) for name in project_modules(root))
    return {str(f.relative_to(PROJECT)): file_sha256(f) for f in files}


def evaluations_choose_the_model(train_params):
    """Whether the evaluation schedule decides what is exported (then it is part of what a run computes)."""
    return train_params.keep == "best" or train_params.patience > 0


def observing_params(train_params):
    return OBSERVING_PARAMS - EVALUATION_PARAMS if evaluations_choose_the_model(train_params) else OBSERVING_PARAMS


def fingerprint(model_params, train_params, block_size, tokenizer_dir, tokens_dir, world_size):
    """Everything a checkpoint's weights depend on."""
    observing = observing_params(train_params)
    return {
        "model": model_params.model_dump(),
        "base": base_identity(model_params.base, model_params.revision),
        "train": train_params.model_dump(exclude=observing),
        "block_size": block_size,
        "tokenizer": file_sha256(Path(tokenizer_dir) / "tokenizer.json"),
        "data": {f.name: file_sha256(f) for f in sorted(Path(tokens_dir).iterdir()) if f.is_file()},
        "code": code_hashes(),
        "runtime": {"world_size": world_size, "torch": torch.__version__, "transformers": transformers.__version__},
    }

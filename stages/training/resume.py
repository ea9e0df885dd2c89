"""Checkpoints that may be reused: only those made by the same code, params, tokenizer, data and runtime.

A checkpoints directory holds `fingerprint.json` (what its checkpoints were made with), Trainer's
`checkpoint-<step>` directories and, once a run has finished, `final/`: the exported model and
the cost record of that run, copied back byte for byte when nothing that determines the result
changed (so a re-run with nothing to do changes no output).
"""
import ast
import hashlib
import logging
import shutil
from pathlib import Path

import torch
import transformers

from stages.common import StageError, atomic_path, log, read_json, write_json

# Train params that change how a run is observed or saved, not what it computes.
OPERATIONAL = {"save_steps", "save_total_limit", "logging_steps", "eval_steps", "eval_blocks", "accelerate_config"}
STAGES_DIR = Path(__file__).resolve().parent.parent


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def module_file(name):
    """The source file of a module of this project, or None for any other module."""
    path = STAGES_DIR.parent.joinpath(*name.split("."))
    if name.split(".")[0] != STAGES_DIR.name:
        return None
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


def code_hashes(root="stages.train"):
    """sha256 of the source of every project module the training code imports."""
    files = sorted(module_file(name) for name in project_modules(root))
    return {str(f.relative_to(STAGES_DIR.parent)): file_sha256(f) for f in files}


def fingerprint(model_params, train_params, block_size, tokenizer_dir, tokens_dir, precision, world_size):
    """Everything a checkpoint's weights depend on."""
    return {
        "model": model_params,
        "train": {k: v for k, v in train_params.items() if k not in OPERATIONAL},
        "block_size": block_size,
        "tokenizer": file_sha256(Path(tokenizer_dir) / "tokenizer.json"),
        "data": {f.name: file_sha256(f) for f in sorted(Path(tokens_dir).iterdir()) if f.is_file()},
        "code": code_hashes(),
        "runtime": {"precision": precision, "world_size": world_size, "torch": torch.__version__, "transformers": transformers.__version__},
    }


def checkpoint_step(path):
    return int(Path(path).name.split("-")[1])


def latest_checkpoint(checkpoints):
    return max(checkpoints.glob("checkpoint-*"), key=checkpoint_step, default=None)


def complete_checkpoints(checkpoints):
    """Checkpoints by step; incomplete ones (no readable trainer_state.json, which Trainer writes last) removed."""
    complete = []
    for path in checkpoints.glob("checkpoint-*"):
        try:
            read_json(path / "trainer_state.json")
            complete.append(path)
        except (OSError, ValueError):
            log.info("train: removing incomplete checkpoint %s", path)
            shutil.rmtree(path)
    return sorted(complete, key=checkpoint_step)


def checkpoint_to_resume(checkpoints, current, steps):
    """The latest complete checkpoint made with `current` settings, or None (old ones removed).

    A checkpoint at the last step is used only through `final/`: without it (killed while
    exporting) the run resumes from the checkpoint before.
    """
    if not checkpoints.exists():
        return None
    saved = read_json(checkpoints / "fingerprint.json") if (checkpoints / "fingerprint.json").exists() else {}
    changed = [key for key in current if saved.get(key) != current[key]]
    if changed:
        log.info("train: starting fresh: checkpoints in %s were made with other %s", checkpoints, ", ".join(changed))
        shutil.rmtree(checkpoints)
        return None
    usable = [c for c in complete_checkpoints(checkpoints) if checkpoint_step(c) < steps or (checkpoints / "final").is_dir()]
    return usable[-1] if usable else None


def agree_with_main(current, checkpoint):
    """Rank 0's checkpoint to resume from, on every process; StageError on every process when any
    of them has other params, code, tokenizer, data or runtime than rank 0, or lacks the checkpoint."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return checkpoint
    shared = [current, str(checkpoint) if checkpoint else None]
    torch.distributed.broadcast_object_list(shared)
    main, checkpoint = shared[0], Path(shared[1]) if shared[1] else None
    differs = [key for key in current if current[key] != main.get(key)]
    problem = (f"its {', '.join(differs)} differ from rank 0's (run every machine with the same checkout and `dvc pull`)" if differs
               else f"it lacks {checkpoint}, from which rank 0 resumes (copy it there, or share {checkpoint.parent})"
               if checkpoint and not checkpoint.is_dir() else None)
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
    if not (checkpoints / "fingerprint.json").exists():
        return None
    saved = read_json(checkpoints / "fingerprint.json")
    without_precision = lambda fp: {**fp, "runtime": {k: v for k, v in fp.get("runtime", {}).items() if k != "precision"}}  # noqa: E731
    same = all(without_precision(saved).get(key) == without_precision(current)[key] for key in current)
    return saved.get("chosen") if same else None


def keep_final(checkpoints, model_dir, cost_file):
    """Copy the exported model and the run's cost record beside the checkpoints."""
    with atomic_path(checkpoints / "final") as tmp:
        shutil.copytree(model_dir, tmp / "model")
        shutil.copy2(cost_file, tmp / cost_file.name)


def restore_final(checkpoints, model_dir, cost_file):
    """Put the finished run's model and cost record back, byte for byte."""
    final = checkpoints / "final"
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

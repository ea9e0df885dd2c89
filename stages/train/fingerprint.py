"""What a training run's weights depend on, as hashes: params, tokenizer, tokens, code, base model and runtime.

Checkpoints are reused only by a run with the same fingerprint (see stages/train/checkpoints.py).
The precision and compile that `auto` picks are not in it: a run with the same fingerprint keeps
its checkpoints' choice.
"""
import ast
from pathlib import Path

import torch
import transformers

from stages.base import base_identity
from stages.common import file_sha256
from stages.train.keep import evaluations_choose_the_model

# Train params that change how a run is observed, saved or supervised, not what it computes.
OBSERVING_PARAMS = {"save_steps", "save_total_limit", "logging_steps", "eval_steps", "eval_blocks", "accelerate_config", "peer_timeout"}
# ... unless the evaluations choose the exported step (train.keep: best) or the last (train.patience).
EVALUATION_PARAMS = {"eval_steps", "eval_blocks", "save_steps"}
STAGES_DIR = Path(__file__).resolve().parent.parent


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


def code_hashes(root="stages.train.process"):
    """sha256 of the source of every project module the training code imports."""
    files = sorted(module_file(name) for name in project_modules(root))
    return {str(f.relative_to(STAGES_DIR.parent)): file_sha256(f) for f in files}


def observing_params(train_params):
    return OBSERVING_PARAMS - EVALUATION_PARAMS if evaluations_choose_the_model(train_params) else OBSERVING_PARAMS


def fingerprint(model_params, train_params, block_size, tokenizer_dir, tokens_dir, world_size):
    """Everything a checkpoint's weights depend on."""
    observing = observing_params(train_params)
    return {
        "model": model_params,
        "base": base_identity(model_params),
        "train": {k: v for k, v in train_params.items() if k not in observing},
        "block_size": block_size,
        "tokenizer": file_sha256(Path(tokenizer_dir) / "tokenizer.json"),
        "data": {f.name: file_sha256(f) for f in sorted(Path(tokens_dir).iterdir()) if f.is_file()},
        "code": code_hashes(),
        "runtime": {"world_size": world_size, "torch": torch.__version__, "transformers": transformers.__version__},
    }

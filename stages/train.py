"""train: GPT-2 from scratch (shape from params.model) or fine-tuned from model.base, with Trainer.

Checkpoints go to models/checkpoints, which DVC keeps between runs (persist): a run that was
interrupted resumes from the latest complete checkpoint, provided it was made with the same
model, training params, tokenizer and data; otherwise the old checkpoints are removed and the
log says why. Train/eval loss, learning rate and tokens/s stream to DVCLive (metrics/train),
from the main process only. The final model and tokenizer are saved to models/model.
"""
import hashlib
import json
import shutil
import time
from pathlib import Path

import torch
from dvclive import Live
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

from stages.common import Blocks, StageError, atomic_path, load_params, log, read_json, run_stage, write_json

TOKENS = Path("data/tokens")
TOKENIZER = Path("models/tokenizer")
CHECKPOINTS = Path("models/checkpoints")
FINGERPRINT = CHECKPOINTS / "fingerprint.json"
MODEL = Path("models/model")
LIVE_DIR = Path("metrics/train")
# Train params that change how a run is observed or saved, not what it computes.
OPERATIONAL = {"save_steps", "save_total_limit", "logging_steps", "eval_steps", "eval_blocks"}
LIVE_NAMES = {"loss": "train/loss", "eval_loss": "eval/loss", "learning_rate": "train/lr", "grad_norm": "train/grad_norm"}


def check_params(model_params, train_params, block_size):
    for key in ("lr", "batch_size", "grad_accum"):
        if not train_params[key] > 0:
            raise StageError(f"train.{key}={train_params[key]} must be positive")
    if not (train_params["max_steps"] > 0 or train_params["epochs"] > 0):
        raise StageError(f"train.max_steps={train_params['max_steps']} and train.epochs={train_params['epochs']}: one must be positive")
    if not model_params["base"]:
        if model_params["n_embd"] % model_params["n_head"]:
            raise StageError(f"model.n_embd={model_params['n_embd']} is not divisible by model.n_head={model_params['n_head']}")
        if block_size > model_params["n_positions"]:
            raise StageError(f"tokenize.block_size={block_size} is larger than the model's context model.n_positions={model_params['n_positions']}")


def build_model(model_params, tokenizer, block_size, attn_implementation):
    base = model_params["base"]
    if base:
        model = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=False, attn_implementation=attn_implementation)
        base_vocab = AutoTokenizer.from_pretrained(base).get_vocab()
        if base_vocab != tokenizer.get_vocab():
            raise StageError(f"{TOKENIZER} is not the tokenizer of model.base={base!r}: re-run the tokenizer stage")
        context = model.config.max_position_embeddings
        if block_size > context:
            raise StageError(f"tokenize.block_size={block_size} is larger than the context of model.base={base!r} ({context})")
    else:
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=model_params["n_positions"],
            n_embd=model_params["n_embd"],
            n_layer=model_params["n_layer"],
            n_head=model_params["n_head"],
            resid_pdrop=model_params["dropout"],
            embd_pdrop=model_params["dropout"],
            attn_pdrop=model_params["dropout"],
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            attn_implementation=attn_implementation,
        )
        model = GPT2LMHeadModel(config)
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise StageError(f"the tokenizer has {len(tokenizer)} tokens but the model's embeddings have {rows} rows")
    return model


def resolve_precision(precision):
    if precision != "auto":
        if precision not in ("fp32", "bf16", "fp16"):
            raise StageError(f"train.precision={precision!r} must be auto, fp32, bf16 or fp16")
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # Without native bf16 instructions CPU autocast emulates bf16 and runs slower than fp32.
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def resolve_compile(compile_setting):
    # On a GPU compilation pays for itself within a few hundred steps; on CPU only in long runs.
    return torch.cuda.is_available() if compile_setting == "auto" else bool(compile_setting)


def file_sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fingerprint(model_params, train_params):
    """What a checkpoint must have been made with for a run to resume from it."""
    return {
        "model": model_params,
        "train": {k: v for k, v in train_params.items() if k not in OPERATIONAL},
        "tokenizer": file_sha256(TOKENIZER / "tokenizer.json"),
        "data": file_sha256(TOKENS / "meta.json"),
    }


def checkpoint_to_resume(current):
    """The latest complete checkpoint made with `current` settings, or None (old ones removed)."""
    if not CHECKPOINTS.exists():
        return None
    saved = read_json(FINGERPRINT) if FINGERPRINT.exists() else {}
    changed = [key for key in current if saved.get(key) != current[key]]
    if changed:
        log.info("train: starting fresh: checkpoints in %s were made with other %s", CHECKPOINTS, ", ".join(changed))
        shutil.rmtree(CHECKPOINTS)
        return None
    complete = []
    for path in CHECKPOINTS.glob("checkpoint-*"):
        try:  # Trainer writes trainer_state.json last: without a readable one the save was cut short
            json.loads((path / "trainer_state.json").read_text())
            complete.append(path)
        except (OSError, ValueError):
            log.info("train: removing incomplete checkpoint %s", path)
            shutil.rmtree(path)
    return max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)


class LiveCallback(TrainerCallback):
    """Streams losses, learning rate and tokens/s to DVCLive; only the main process writes."""

    def __init__(self, live, tokens_per_step):
        self.live, self.tokens_per_step = live, tokens_per_step
        self.last_step, self.last_time = 0, time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_step, self.last_time = state.global_step, time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        self.live.step = state.global_step
        for key, name in LIVE_NAMES.items():
            if key in logs:
                self.live.log_metric(name, logs[key])
        if "loss" in logs and state.global_step > self.last_step:
            now = time.perf_counter()
            self.live.log_metric("train/tokens_per_sec", (state.global_step - self.last_step) * self.tokens_per_step / (now - self.last_time))
            self.last_step, self.last_time = state.global_step, now
        if "train_runtime" in logs:
            self.live.log_metric("train/runtime_sec", logs["train_runtime"], plot=False)
        self.live.next_step()


def main():
    model_params, train_params = load_params("model"), load_params("train")
    block_size = load_params("tokenize")["block_size"]
    check_params(model_params, train_params, block_size)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    precision = resolve_precision(train_params["precision"])
    torch.manual_seed(train_params["seed"])
    model = build_model(model_params, tokenizer, block_size, train_params["attn_implementation"])
    train_data = Blocks(TOKENS, "train")
    eval_data = Blocks(TOKENS, "val", limit=train_params["eval_blocks"])

    current = fingerprint(model_params, train_params)
    resume = checkpoint_to_resume(current)
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    write_json(FINGERPRINT, current)
    args = TrainingArguments(
        output_dir=str(CHECKPOINTS),
        per_device_train_batch_size=train_params["batch_size"],
        per_device_eval_batch_size=train_params["batch_size"],
        gradient_accumulation_steps=train_params["grad_accum"],
        learning_rate=train_params["lr"],
        lr_scheduler_type=train_params["lr_scheduler"],
        warmup_steps=train_params["warmup_steps"],
        max_steps=train_params["max_steps"] if train_params["max_steps"] > 0 else -1,
        num_train_epochs=train_params["epochs"],
        weight_decay=train_params["weight_decay"],
        adam_beta2=train_params["adam_beta2"],
        max_grad_norm=train_params["max_grad_norm"],
        seed=train_params["seed"],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        torch_compile=resolve_compile(train_params["compile"]),
        optim="adamw_torch_fused",
        eval_strategy="steps",
        eval_steps=train_params["eval_steps"],
        save_strategy="steps",
        save_steps=train_params["save_steps"],
        save_total_limit=train_params["save_total_limit"],
        logging_steps=train_params["logging_steps"],
        report_to="none",
        dataloader_drop_last=True,
        use_cpu=not torch.cuda.is_available(),
    )
    live = Live(str(LIVE_DIR), resume=resume is not None, dvcyaml=False, save_dvc_exp=False)
    tokens_per_step = train_params["batch_size"] * train_params["grad_accum"] * block_size * args.world_size
    trainer = Trainer(
        model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
        processing_class=tokenizer, callbacks=[LiveCallback(live, tokens_per_step)],
    )
    n_params = sum(p.numel() for p in model.parameters())
    log.info("train: %.2fM parameters, %s, %d tokens/step, %s", n_params / 1e6, precision, tokens_per_step,
             f"resuming from {resume}" if resume else "from the start")
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if trainer.is_world_process_zero():
        with atomic_path(MODEL) as tmp:
            trainer.save_model(tmp)
        live.end()
    log.info("train: %d steps, final train loss %.4f, %.0fs", result.global_step, result.training_loss, result.metrics["train_runtime"])


if __name__ == "__main__":
    run_stage(main)

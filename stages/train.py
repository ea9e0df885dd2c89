"""train: GPT-2 from scratch (shape from params.model) or fine-tuned from model.base, with Trainer.

Checkpoints go to models/checkpoints, which DVC keeps between runs (persist): a run that was
interrupted resumes from the latest complete checkpoint, provided it was made with the same
model, training params, tokenizer and data; otherwise the old checkpoints are removed and the
log says why. Train/eval loss, learning rate and tokens/s stream to DVCLive (metrics/train),
from the main process only. The final model and tokenizer are saved to models/model.
"""
import hashlib
import json
import logging
import math
import os
import shutil
import statistics
import time
from pathlib import Path

import psutil
import torch
from dvclive import Live
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

from stages.common import Blocks, StageError, atomic_path, flops_per_token, load_params, log, peak_flops, peak_rss_bytes, read_json, run_stage, write_json

TOKENS = Path("data/tokens")
TOKENIZER = Path("models/tokenizer")
CHECKPOINTS = Path("models/checkpoints")
FINGERPRINT = CHECKPOINTS / "fingerprint.json"
MODEL = Path("models/model")
LIVE_DIR = Path("metrics/train")
COST = Path("metrics/train_cost.json")
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


# torch.compile costs 40-55 s on CPU before the first step (and needs a C++ compiler there) and
# gains 0-60% per step (1.6x on the tutorial's 6x384 shape, 1.2x on the default 4x128, nothing on
# 4x256): `auto` compiles on CPU only when the run is planned to take this long, so the compile
# costs a few percent at worst.
CPU_COMPILE_AFTER_SECONDS = 1800


def resolve_compile(compile_setting, estimated_seconds):
    if compile_setting != "auto":
        return bool(compile_setting)
    # On a GPU compilation pays for itself within a few hundred steps.
    return torch.cuda.is_available() or estimated_seconds > CPU_COMPILE_AFTER_SECONDS


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


def predicted_peak_bytes(base_rss, n_params, config, micro_batch, block_size):
    """Peak memory of a training step, fitted (within 10%) to measured peak RSS of ten CPU fp32 runs
    (1-8 layers, d 64-384, T 128-1024, V 2k-30k): per token and layer about 44.5 saved d-wide
    fp32 vectors, about 3 copies of the logits, 3.3 of every head's T x T attention (CPU SDPA
    keeps them for backward), plus 12 bytes/parameter for gradients and AdamW moments. bf16 and
    GPU flash attention need less, so elsewhere this is an upper bound."""
    layers, width, heads = config.num_hidden_layers, config.hidden_size, config.num_attention_heads
    tokens = micro_batch * block_size
    activations = 44.5 * tokens * layers * width + 3.04 * tokens * config.vocab_size + 3.26 * micro_batch * heads * block_size**2 * layers
    return base_rss + 12 * n_params + 4 * activations + 57e6


def memory_budget(processes_here):
    """Bytes one training process may use: GPU memory, or this process's share of RAM."""
    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[1]
    return (psutil.virtual_memory().available + current_rss() * processes_here) / processes_here


def current_rss():
    return psutil.Process().memory_info().rss


def plan_micro_batch(batch_size, predict, budget):
    """The largest micro-batch dividing batch_size whose predicted peak fits 90% of the budget."""
    for micro in sorted((m for m in range(1, batch_size + 1) if batch_size % m == 0), reverse=True):
        if predict(micro) <= 0.9 * budget:
            return micro
    raise StageError(
        f"training needs about {predict(1) / 2**30:.1f} GiB even one block at a time, and {budget / 2**30:.1f} GiB is available: "
        "use a smaller model (model.n_layer, model.n_embd), tokenize.block_size or tokenizer.vocab_size"
    )


def probe_seconds_per_micro_batch(model, micro_batch, block_size, precision, warmup=2, timed=3):
    """Median time of a forward+backward of a micro-batch of random tokens, after warm-up passes
    (the first passes run up to twice as slow while allocator and kernels settle)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    ids = torch.randint(0, model.config.vocab_size, (micro_batch, block_size), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    seconds = []
    for _ in range(warmup + timed):
        started = time.perf_counter()
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[warmup:])


def truncate_live_rows(after_step):
    """Drop DVCLive rows logged after the checkpoint being resumed from (they are logged again)."""
    for tsv in (LIVE_DIR / "plots").rglob("*.tsv"):
        rows = tsv.read_text().splitlines()
        kept = rows[:1] + [row for row in rows[1:] if int(row.split("\t")[0]) <= after_step]
        tsv.write_text("\n".join(kept) + "\n")


def record_cost(estimate, seconds):
    """Write the plan beside what the run took: time, peak RSS of this process, checkpoint size."""
    checkpoints = sorted(CHECKPOINTS.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    actual = {
        "seconds": round(seconds, 1),
        "peak_gib": round(peak_rss_bytes() / 2**30, 3),
        "checkpoint_mib": round(sum(f.stat().st_size for f in checkpoints[-1].rglob("*") if f.is_file()) / 2**20, 1) if checkpoints else None,
    }
    write_json(COST, {"estimate": estimate, "actual": actual})


class LiveCallback(TrainerCallback):
    """Streams losses, learning rate, tokens/s and MFU to DVCLive; only the main process writes."""

    def __init__(self, live, tokens_per_step, flops_per_token, peak):
        self.live, self.tokens_per_step = live, tokens_per_step
        self.flops_per_token, self.peak = flops_per_token, peak
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
            tokens_per_sec = (state.global_step - self.last_step) * self.tokens_per_step / (now - self.last_time)
            self.live.log_metric("train/tokens_per_sec", tokens_per_sec)
            self.live.log_metric("train/mfu", tokens_per_sec * self.flops_per_token / self.peak)
            self.last_step, self.last_time = state.global_step, now
        if "train_runtime" in logs:
            self.live.log_metric("train/runtime_sec", logs["train_runtime"], plot=False)
        self.live.next_step()


def main():
    # Under `accelerate launch` every process runs this; torchrun's variables say which one it is.
    is_main = int(os.environ.get("RANK", "0")) == 0
    if not is_main:
        log.setLevel(logging.WARNING)
    if not torch.cuda.is_available():  # accelerate launch sets OMP_NUM_THREADS=1: share the cores instead
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    model_params, train_params = load_params("model"), load_params("train")
    block_size = load_params("tokenize")["block_size"]
    check_params(model_params, train_params, block_size)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    precision = resolve_precision(train_params["precision"])
    torch.manual_seed(train_params["seed"])
    model = build_model(model_params, tokenizer, block_size, train_params["attn_implementation"])
    train_data = Blocks(TOKENS, "train")
    eval_data = Blocks(TOKENS, "val", limit=train_params["eval_blocks"])

    # Plan: parameters, memory (micro-batches if the batch would not fit), FLOPs, time, disk.
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    per_token = flops_per_token(n_params - config.n_positions * config.hidden_size, config.num_hidden_layers, config.hidden_size, block_size)
    base_rss = current_rss()
    predict = lambda micro: predicted_peak_bytes(base_rss, n_params, config, micro, block_size)  # noqa: E731
    processes_here = 1 if torch.cuda.is_available() else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    micro = plan_micro_batch(train_params["batch_size"], predict, memory_budget(processes_here))
    grad_accum = train_params["grad_accum"] * train_params["batch_size"] // micro
    if micro < train_params["batch_size"]:
        log.info("train: batch_size=%d would not fit: %d micro-batches of %d (same global batch)", train_params["batch_size"], grad_accum, micro)

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    tokens_per_step = micro * grad_accum * block_size * world_size
    steps = train_params["max_steps"] if train_params["max_steps"] > 0 else math.ceil(len(train_data) // (micro * world_size) / grad_accum) * int(train_params["epochs"])
    seconds_per_step = grad_accum * probe_seconds_per_micro_batch(model, micro, block_size, precision)
    compile_model = resolve_compile(train_params["compile"], steps * seconds_per_step)
    args = TrainingArguments(
        output_dir=str(CHECKPOINTS),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=grad_accum,
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
        torch_compile=compile_model,
        optim="adamw_torch_fused",
        eval_strategy="steps",
        eval_steps=train_params["eval_steps"],
        save_strategy="steps",
        save_steps=train_params["save_steps"],
        save_total_limit=train_params["save_total_limit"],
        logging_steps=train_params["logging_steps"],
        report_to="none",
        dataloader_drop_last=True,
        ddp_find_unused_parameters=False,
        use_cpu=not torch.cuda.is_available(),
    )
    current = fingerprint(model_params, train_params)
    with args.main_process_first(local=False, desc="checkpoints"):  # the main process cleans up and marks them first
        resume = checkpoint_to_resume(current)
        if is_main:
            CHECKPOINTS.mkdir(parents=True, exist_ok=True)
            write_json(FINGERPRINT, current)
    done = json.loads((resume / "trainer_state.json").read_text())["global_step"] if resume else 0
    estimate = {
        "params": n_params,
        "tokens": (steps - done) * tokens_per_step,
        "flops": (steps - done) * tokens_per_step * per_token,
        "seconds": round((steps - done) * seconds_per_step, 1),
        "peak_gib": round(predict(micro) / 2**30, 3),
        "checkpoint_mib": round(12 * n_params / 2**20, 1),  # fp32 weights and two AdamW moments
        "micro_batch": micro,
        "grad_accum": grad_accum,
    }
    log.info(
        "train: %.2fM parameters, %s%s, %s; plan: %d steps x %d tokens = %.3g FLOPs, about %.0fs, peak %.2f GiB, %.0f MiB per checkpoint",
        n_params / 1e6, precision, ", compiled" if compile_model else "", f"resuming from {resume}" if resume else "from the start", steps - done, tokens_per_step,
        estimate["flops"], estimate["seconds"], estimate["peak_gib"], estimate["checkpoint_mib"],
    )

    if steps <= done:  # Trainer would take one step past max_steps; the checkpoint already is the result
        if is_main:
            with atomic_path(MODEL) as tmp:
                AutoModelForCausalLM.from_pretrained(resume).save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
            record_cost(estimate, seconds=0.0)
        log.info("train: %s already holds all %d steps: saved as the model", resume, steps)
        return

    live = None
    if is_main:
        if resume:
            truncate_live_rows(done)
        live = Live(str(LIVE_DIR), resume=resume is not None, dvcyaml=False, save_dvc_exp=False)
    callback = LiveCallback(live, tokens_per_step, per_token, peak_flops(precision) * args.world_size)
    trainer = Trainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data, processing_class=tokenizer, callbacks=[callback])
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if is_main:
        with atomic_path(MODEL) as tmp:
            trainer.save_model(tmp)
        live.end()
        record_cost(estimate, seconds=result.metrics["train_runtime"])
    log.info("train: %d steps, final train loss %.4f, %.0fs (estimated %.0fs)", result.global_step, result.training_loss,
             result.metrics["train_runtime"], estimate["seconds"])


if __name__ == "__main__":
    run_stage(main)

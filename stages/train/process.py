"""What every training process runs: GPT-2 from scratch (shape from params.model) or fine-tuned
from model.base, with Trainer.

The stage's command (stages/train/__main__.py) starts the processes under `accelerate launch`. Checkpoints
go to models/checkpoints, which DVC keeps between runs (persist): a run resumes from the latest
complete checkpoint made by the same code, params, tokenizer, data and runtime, and a finished
run with nothing changed puts its own model and cost record back (see stages/train/checkpoints.py);
a checkpoint is used only while its files match the seal written when it was saved
(stages/train/seal.py). A process that loses a peer stops naming it (stages/train/peers.py).
Train/eval loss, learning rate, tokens/s and MFU go to DVCLive (metrics/train) from the main process;
the run's time, tokens/s and the step kept to metrics/train.json, the figures runs are compared by.
"""
import datetime
import logging
import os

import torch
from accelerate import PartialState
from transformers import PrinterCallback, Trainer
from transformers.utils.logging import disable_progress_bar

from stages.blocks import Blocks
from stages.common import atomic_path, log, reading, run_stage
from stages.params import GENERATION_KEYS, load_params
from stages.paths import CHECKPOINTS, MODEL, TOKENIZER, TOKENS, TRAIN_COST, TRAIN_LIVE, TRAIN_METRICS
from stages.pretrained import pretrained_tokenizer
from stages.train import checkpoints, notices, peers
from stages.train.arguments import training_arguments
from stages.train.cost import record_cost, write_train_metrics
from stages.train.device import on_gpu, peak_flops
from stages.train.export import model_card, write_generation_config
from stages.train.fingerprint import fingerprint
from stages.train.keep import describe, outcome, stop_callbacks
from stages.train.live import LiveCallback, open_live
from stages.train.model import build_model, export_vocabulary
from stages.train.plan import make_plan, total_steps
from stages.train.progress import ProgressCallback
from stages.train.seal import SealCheckpoints


def main():
    with peers.leaving_together():  # the group PartialState opens is closed however the process ends
        train_process()


def train_process():
    is_main, world_size = int(os.environ.get("RANK", "0")) == 0, int(os.environ.get("WORLD_SIZE", "1"))
    if not is_main:
        log.setLevel(logging.WARNING)
    notices.install()
    disable_progress_bar()  # its bars (loading weights, writing shards) say nothing about the stage
    if not on_gpu():  # accelerate launch sets OMP_NUM_THREADS=1: share the cores instead
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    model_params, train_params = load_params("model"), load_params("train")
    block_size, sample_params = load_params("tokenize")["block_size"], load_params("sample")  # params checked by the launcher
    with reading(TOKENIZER, "a tokenizer"):
        tokenizer = pretrained_tokenizer(TOKENIZER)
    # Joins the other processes, before make_plan: every process takes rank 0's precision and compile.
    PartialState(cpu=not on_gpu(), timeout=datetime.timedelta(seconds=train_params["peer_timeout"]))
    torch.manual_seed(train_params["seed"])
    model = build_model(model_params, tokenizer, block_size, train_params["attn_implementation"])
    train_data, eval_data = Blocks(TOKENS, "train"), Blocks(TOKENS, "val", limit=train_params["eval_blocks"])
    steps = total_steps(train_params, len(train_data), world_size)
    run_fingerprint = fingerprint(model_params, train_params, block_size, TOKENIZER, TOKENS, world_size)
    plan = make_plan(model, train_params, block_size, steps, kept=checkpoints.settings_of_run(CHECKPOINTS, run_fingerprint))
    # Rank 0 alone removes or records checkpoints; every process then takes its checkpoint, or stops.
    checkpoint = peers.agree_with_main(run_fingerprint, checkpoint_on_main(run_fingerprint, plan, steps) if is_main else None)
    if checkpoints.is_final(checkpoint):
        if is_main:
            checkpoints.restore_final(CHECKPOINTS, MODEL, TRAIN_COST)
        log.info("train: %s holds the finished run, made by this code, params and data: its model and cost record are restored", checkpoint)
    else:
        # evaluation drops an incomplete last batch (dataloader_drop_last): a batch never exceeds a process's blocks
        args = training_arguments(train_params, plan, steps, max(1, min(plan.micro_batch, len(eval_data) // world_size)))
        trainer = Trainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data, processing_class=tokenizer,
                          callbacks=stop_callbacks(train_params))
        params = {"model": model_params, "train": train_params, "tokenize.block_size": block_size}
        train_and_export(trainer, plan, steps, checkpoint, params, run_fingerprint["base"])
    if is_main:  # the sampling defaults are not part of what training computes: written either way
        write_generation_config(MODEL, tokenizer, {key: sample_params[key] for key in GENERATION_KEYS})
        write_train_metrics(TRAIN_COST, TRAIN_METRICS)


def checkpoint_on_main(run_fingerprint, plan, steps):
    """The checkpoint rank 0 resumes from (final/: the finished run), after which the checkpoints
    directory records this run's fingerprint and its choice of precision and compile."""
    checkpoint = checkpoints.checkpoint_to_resume(CHECKPOINTS, run_fingerprint, steps)
    checkpoints.record_fingerprint(CHECKPOINTS, run_fingerprint, {"precision": plan.precision, "compile": plan.compile})
    return checkpoint


def log_plan(plan, estimate, checkpoint, steps):
    log.info(
        "train: %.2fM parameters, %s%s (by %s), %s; plan: %d steps x %d tokens = %.3g FLOPs, about %.0fs, peak %.2f GiB, %.0f MiB per checkpoint",
        plan.n_params / 1e6, plan.precision, ", compiled" if plan.compile else "", plan.choice["chosen_by"], f"resuming from {checkpoint}" if checkpoint else "from the start",
        steps, plan.tokens_per_step, estimate["flops"], estimate["seconds"], estimate["peak_gib"], estimate["checkpoint_mib"],
    )


def train_and_export(trainer, plan, steps, checkpoint, params, base):
    """Train from `checkpoint` (or the start) to the last step or an early stop; the main process
    exports the model kept (train.keep), the cost record and the finished run's copy in final/."""
    is_main, world_size = trainer.args.process_index == 0, trainer.args.world_size
    done = checkpoints.checkpoint_step(checkpoint) if checkpoint else 0
    estimate = plan.estimate(steps - done)
    log_plan(plan, estimate, checkpoint, steps - done)
    live = open_live(TRAIN_LIVE, done if checkpoint else None) if is_main else None
    eval_data = trainer.eval_dataset
    trainer.add_callback(LiveCallback(live, plan.tokens_per_step, plan.flops_per_token, peak_flops(plan.precision) * world_size, eval_data.chars_per_token))
    trainer.add_callback(SealCheckpoints())
    trainer.add_callback(ProgressCallback(plan.tokens_per_step, eval_data.chars_per_token, max(trainer.args.logging_steps, -(-steps // 20))))
    trainer.remove_callback(PrinterCallback)  # Trainer's raw dictionaries: the progress line says it all
    with peers.watched():
        run = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    result = outcome(trainer.state, params["train"], eval_data.chars_per_token)
    if is_main:
        export_run(trainer, params, trainer.train_dataset.meta, base, result)
        live.end()
        tokens = (trainer.state.global_step - done) * plan.tokens_per_step
        record_cost(TRAIN_COST, estimate, run.metrics["train_runtime"], tokens, result, checkpoints.latest_checkpoint(CHECKPOINTS))
        checkpoints.keep_final(CHECKPOINTS, MODEL, TRAIN_COST)
    log.info("train: %s; final train loss %.4f, %.0fs (estimated %.0fs)", describe(result), run.training_loss,
             run.metrics["train_runtime"], estimate["seconds"])


def export_run(trainer, params, tokens_meta, base, result):
    """The trained model, its tokenizer and its model card, into models/model in one move."""
    export_vocabulary(trainer.model, trainer.processing_class, params["model"])
    with atomic_path(MODEL) as tmp:
        trainer.save_model(tmp)
        card = model_card(trainer.model.config, params, tokens_meta, trainer.state.log_history, base, result)
        (tmp / "README.md").write_text(card, encoding="utf-8")


if __name__ == "__main__":
    run_stage(main, "train")

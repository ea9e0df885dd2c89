"""The training run, top to bottom: GPT-2 from scratch (shape from model params) or fine-tuned
from a base, with Trainer. Every process of a run calls `train`; the main process (rank 0) alone
writes results.

Checkpoints are kept between runs: a run resumes from the latest complete checkpoint made by the
same code, params, tokenizer, data and runtime, and a finished run with nothing changed puts its
own model and cost record back (training/checkpoints.py); a checkpoint is used only while its files
match the seal written when it was saved. A process that loses a peer stops naming it
(training/distributed.py). Train/eval loss, learning rate, tokens/s and MFU go to DVCLive from the
main process; the run's time, tokens/s and the step kept to the metrics file runs are compared by.
"""

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import PrinterCallback, Trainer
from transformers.utils.logging import disable_progress_bar

from tolstoy.console import log
from tolstoy.data.blocks import Blocks
from tolstoy.device import on_gpu, peak_flops
from tolstoy.files import atomic_path, reading
from tolstoy.model.build import build_model, export_vocabulary
from tolstoy.model.export import model_card, write_generation_config
from tolstoy.model.pretrained import pretrained_tokenizer
from tolstoy.training import checkpoints, distributed
from tolstoy.training.arguments import describe, outcome, stop_callbacks, training_arguments
from tolstoy.training.callbacks import LiveCallback, ProgressCallback, open_live
from tolstoy.training.checkpoints import SealCheckpoints, fingerprint
from tolstoy.training.plan import make_plan, record_cost, reset_gpu_peak_memory, total_steps, write_train_metrics


@dataclass(frozen=True)
class RunFiles:
    """Where a training run reads (tokenizer, tokens) and writes."""

    tokenizer: Path
    tokens: Path
    checkpoints: Path  # kept between runs: resumed from; final/ holds the finished run's model
    model: Path
    live: Path  # DVCLive's directory
    cost: Path  # the plan's estimate and what the run cost
    metrics: Path  # the figures runs are compared by


def train(files, model_params, train_params, block_size, sample_params):
    """One process's part in a training run: settings, model, Trainer with its callbacks, resume or
    start, train, keep, export. Of `sample_params`, the sampling settings (GENERATION_KEYS) are
    written beside the model as its generation defaults."""
    is_main, world_size = int(os.environ.get("RANK", "0")) == 0, int(os.environ.get("WORLD_SIZE", "1"))
    if not is_main:
        log.setLevel(logging.WARNING)
    install_notices()
    disable_progress_bar()  # its bars (loading weights, writing shards) say nothing about the run
    if not on_gpu():  # accelerate launch sets OMP_NUM_THREADS=1: share the cores instead
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    with reading(files.tokenizer, "a tokenizer"):
        tokenizer = pretrained_tokenizer(files.tokenizer)
    # Joins the other processes, before make_plan: every process takes rank 0's precision and compile.
    PartialState(cpu=not on_gpu(), timeout=datetime.timedelta(seconds=train_params.peer_timeout))
    torch.manual_seed(train_params.seed)
    model = build_model(model_params, tokenizer, block_size, train_params.attn_implementation)
    train_data, eval_data = (
        Blocks(files.tokens, "train"),
        Blocks(files.tokens, "val", limit=train_params.eval_blocks),
    )
    steps = total_steps(train_params, len(train_data), world_size)
    run_fingerprint = fingerprint(model_params, train_params, block_size, files.tokenizer, files.tokens, world_size)
    plan = make_plan(
        model, train_params, block_size, steps, kept=checkpoints.settings_of_run(files.checkpoints, run_fingerprint)
    )
    # Rank 0 alone removes or records checkpoints; every process then takes its checkpoint, or stops.
    checkpoint = distributed.agree_with_main(
        run_fingerprint, checkpoint_on_main(files.checkpoints, run_fingerprint, plan, steps) if is_main else None
    )
    if checkpoints.is_final(checkpoint):
        if is_main:
            checkpoints.restore_final(files.checkpoints, files.model, files.cost)
        log.info(
            "train: %s holds the finished run, made by this code, params and data: its model and "
            "cost record are restored",
            checkpoint,
        )
    else:
        done = checkpoints.checkpoint_step(checkpoint) if checkpoint else 0
        estimate = plan.estimate(steps - done)
        log_plan(plan, estimate, checkpoint, steps - done)
        live = open_live(files.live, done if checkpoint else None) if is_main else None
        # evaluation drops an incomplete last batch (dataloader_drop_last): a batch never exceeds a process's blocks
        args = training_arguments(
            train_params,
            steps,
            files.checkpoints,
            micro_batch=plan.micro_batch,
            grad_accum=plan.grad_accum,
            eval_batch=max(1, min(plan.micro_batch, len(eval_data) // world_size)),
            precision=plan.precision,
            compile_model=plan.compile,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_data,
            eval_dataset=eval_data,
            processing_class=tokenizer,
            callbacks=[
                *stop_callbacks(train_params),
                LiveCallback(
                    live,
                    plan.tokens_per_step,
                    plan.flops_per_token,
                    peak_flops(plan.precision, seconds=peak_probe_seconds(estimate)) * world_size,
                    eval_data.chars_per_token,
                ),
                SealCheckpoints(),
                ProgressCallback(
                    plan.tokens_per_step, eval_data.chars_per_token, max(args.logging_steps, -(-steps // 20))
                ),
            ],
        )
        trainer.remove_callback(PrinterCallback)  # Trainer's raw dictionaries: the progress line says it all
        reset_gpu_peak_memory()
        with distributed.watched():
            run = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        result = outcome(trainer.state, train_params, eval_data.chars_per_token)
        if is_main:
            params = {
                "model": model_params.model_dump(),
                "train": train_params.model_dump(),
                "tokenize.block_size": block_size,
            }
            export_model(trainer, files.model, model_params, params, run_fingerprint["base"], result)
            live.end()
            tokens = (trainer.state.global_step - done) * plan.tokens_per_step
            record_cost(
                files.cost,
                estimate,
                run.metrics["train_runtime"],
                tokens,
                result,
                checkpoints.latest_checkpoint(files.checkpoints),
            )
            checkpoints.keep_final(files.checkpoints, files.model, files.cost)
        log.info(
            "train: %s; final train loss %.4f, %.0fs (estimated %.0fs)",
            describe(result),
            run.training_loss,
            run.metrics["train_runtime"],
            estimate["seconds"],
        )
    if is_main:  # the sampling defaults are not part of what training computes: written either way
        write_generation_config(files.model, tokenizer, sample_params)
        write_train_metrics(files.cost, files.metrics)


def peak_probe_seconds(estimate):
    """What probing the peak FLOP/s for the MFU may take: a twentieth of the run it reports on, 1.5 s at most."""
    return min(1.5, estimate["seconds"] / 20)


def checkpoint_on_main(checkpoints_dir, run_fingerprint, plan, steps):
    """The checkpoint rank 0 resumes from (final/: the finished run), after which the checkpoints
    directory records this run's fingerprint and its choice of precision and compile."""
    checkpoint = checkpoints.checkpoint_to_resume(checkpoints_dir, run_fingerprint, steps)
    checkpoints.record_fingerprint(
        checkpoints_dir, run_fingerprint, {"precision": plan.precision, "compile": plan.compile}
    )
    return checkpoint


def log_plan(plan, estimate, checkpoint, steps):
    log.info(
        "train: %.2fM parameters, %s%s (by %s), %s; plan: %d steps x %d tokens = %.3g FLOPs, about "
        "%.0fs, peak %.2f GiB, %.0f MiB per checkpoint",
        plan.n_params / 1e6,
        plan.precision,
        ", compiled" if plan.compile else "",
        plan.choice["chosen_by"],
        f"resuming from {checkpoint}" if checkpoint else "from the start",
        steps,
        plan.tokens_per_step,
        estimate["flops"],
        estimate["seconds"],
        estimate["peak_gib"],
        estimate["checkpoint_mib"],
    )


def export_model(trainer, model_dir, model_params, params, base, result):
    """The trained model, its tokenizer and its model card (which lists `params`), into model_dir in one move."""
    export_vocabulary(trainer.model, trainer.processing_class, model_params)
    with atomic_path(model_dir) as tmp:
        trainer.save_model(tmp)
        card = model_card(
            trainer.model.config, params, trainer.train_dataset.meta, trainer.state.log_history, base, result
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")


class TiedWeightsNotice(logging.Filter):
    """GPT-2 ties lm_head to the input embeddings, so checkpoints do not store it and Trainer's
    resume warns that it is missing; one explanatory line replaces the warning."""

    MESSAGE = "There were missing keys in the checkpoint model loaded: ['lm_head.weight']"

    def filter(self, record):
        if record.getMessage().startswith(self.MESSAGE):
            log.info(
                "train: lm_head.weight is tied to the input embeddings (not stored in checkpoints): restored from them"
            )
            return False
        return True


class CompileOffGpuNotice(logging.Filter):
    """TrainingArguments warns that torch.compile mostly speeds up Ampere GPUs whenever it compiles
    elsewhere. The plan compiles on a CPU only where its probe measured compiling to be faster."""

    MESSAGE = "The speedups for torchdynamo mostly come with GPU Ampere or higher"

    def filter(self, record):
        return not record.getMessage().startswith(self.MESSAGE)


def install_notices():
    logging.getLogger("transformers.trainer").addFilter(TiedWeightsNotice())
    logging.getLogger("transformers.training_args").addFilter(CompileOffGpuNotice())

"""Trainer's settings for a run: params.train, the plan's micro-batches, precision and compile.

Which step's weights a run exports, and when it stops (train.keep, train.patience).

`keep: best` exports the evaluated checkpoint with the lowest validation loss: Trainer saves a
checkpoint at every evaluation (save_steps = eval_steps), never rotates the best one away, and
loads it back at the end (load_best_model_at_end). `patience: P` stops training after P
evaluations in a row without a lower validation loss (EarlyStoppingCallback, whose count is
restored with a checkpoint). Either way the run's last step is evaluated too.
"""

from transformers import EarlyStoppingCallback, TrainingArguments

from tolstoy.data.blocks import bits_per_char
from tolstoy.device import on_gpu
from tolstoy.training.checkpoints import checkpoint_step


def speed_settings(precision, compile_model):
    """The Trainer settings that make this project's training fast (bench.performance compares them)."""
    return {
        "optim": "adamw_torch_fused",
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "torch_compile": compile_model,
    }


def training_arguments(
    train_params, steps, checkpoints_dir, *, micro_batch, grad_accum, eval_batch, precision, compile_model
):
    return TrainingArguments(
        output_dir=str(checkpoints_dir),
        per_device_train_batch_size=micro_batch,
        per_device_eval_batch_size=eval_batch,
        gradient_accumulation_steps=grad_accum,
        learning_rate=train_params.lr,
        lr_scheduler_type=train_params.lr_scheduler,
        warmup_steps=train_params.warmup_steps,
        max_steps=steps,
        weight_decay=train_params.weight_decay,
        adam_beta2=train_params.adam_beta2,
        max_grad_norm=train_params.max_grad_norm,
        seed=train_params.seed,
        eval_strategy="steps",
        eval_steps=train_params.eval_steps,
        prediction_loss_only=True,  # evaluation gathers no logits
        save_strategy="steps",
        save_steps=train_params.save_steps,
        save_total_limit=train_params.save_total_limit,
        logging_steps=train_params.logging_steps,
        ddp_timeout=round(train_params.peer_timeout),
        disable_tqdm=True,
        report_to="none",
        dataloader_drop_last=True,
        ddp_find_unused_parameters=False,
        use_cpu=not on_gpu(),
        **keep_arguments(train_params),
        **speed_settings(precision, compile_model),
    )


def keep_arguments(train_params):
    """TrainingArguments for keeping the best step (the best is tracked either way: it names the best step)."""
    return {
        "load_best_model_at_end": train_params.keep == "best",
        "metric_for_best_model": "eval_loss",
        "greater_is_better": False,
        "restore_callback_states_from_checkpoint": True,  # the patience count resumes with its checkpoint
    }


def stop_callbacks(train_params):
    return [EarlyStoppingCallback(early_stopping_patience=train_params.patience)] if train_params.patience else []


def outcome(state, train_params, val_chars_per_token):
    """The steps run, why training stopped, and the step exported with its validation loss."""
    evals = {row["step"]: row["eval_loss"] for row in state.log_history if "eval_loss" in row}
    best = state.best_model_checkpoint
    kept = checkpoint_step(best) if train_params.keep == "best" and best else state.global_step
    stopped_by = "patience" if state.global_step < state.max_steps else "max_steps"
    if stopped_by == "patience":
        stopped = f"no lower validation loss in {train_params.patience} evaluations after step {state.best_global_step}"
    else:
        stopped = f"max_steps reached ({state.max_steps})"
    loss = evals.get(kept)
    return {
        "steps": state.global_step,
        "stopped": stopped,
        "stopped_by": stopped_by,
        "kept": train_params.keep,
        "kept_step": kept,
        "kept_eval_loss": loss,
        "kept_bits_per_char": None if loss is None else round(bits_per_char(loss, val_chars_per_token), 5),
        "evaluations": len(evals),
    }


def describe(result):
    """One phrase: the step exported, its loss, why training stopped."""
    which = "the lowest validation loss" if result["kept"] == "best" else "the last step"
    loss = (
        ""
        if result["kept_eval_loss"] is None
        else f", validation loss {result['kept_eval_loss']:.4f} ({result['kept_bits_per_char']:.3f} bits/char)"
    )
    return (
        f"step {result['kept_step']} of {result['steps']} kept ({which} of {result['evaluations']} evaluations{loss}); "
        f"stopped: {result['stopped']}"
    )

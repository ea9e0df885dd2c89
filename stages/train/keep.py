"""Which step's weights a run exports, and when it stops (train.keep, train.patience).

`keep: best` exports the evaluated checkpoint with the lowest validation loss: Trainer saves a
checkpoint at every evaluation (save_steps = eval_steps), never rotates the best one away, and
loads it back at the end (load_best_model_at_end). `patience: P` stops training after P
evaluations in a row without a lower validation loss (EarlyStoppingCallback, whose count is
restored with a checkpoint). Either way the run's last step is evaluated too.
"""
from transformers import EarlyStoppingCallback

from stages.blocks import bits_per_char
from stages.train.checkpoints import checkpoint_step


def keep_arguments(train_params):
    """TrainingArguments for keeping the best step (the best is tracked either way: it names the best step)."""
    return {
        "load_best_model_at_end": train_params["keep"] == "best",
        "metric_for_best_model": "eval_loss",
        "greater_is_better": False,
        "restore_callback_states_from_checkpoint": True,  # the patience count resumes with its checkpoint
    }


def stop_callbacks(train_params):
    return [EarlyStoppingCallback(early_stopping_patience=train_params["patience"])] if train_params["patience"] else []


def evaluations_choose_the_model(train_params):
    """Whether the evaluation schedule decides what is exported (then it is part of what a run computes)."""
    return train_params["keep"] == "best" or train_params["patience"] > 0


def outcome(state, train_params, val_chars_per_token):
    """The steps run, why training stopped, and the step exported with its validation loss."""
    evals = {row["step"]: row["eval_loss"] for row in state.log_history if "eval_loss" in row}
    best = state.best_model_checkpoint
    kept = checkpoint_step(best) if train_params["keep"] == "best" and best else state.global_step
    stopped_by = "patience" if state.global_step < state.max_steps else "max_steps"
    if stopped_by == "patience":
        stopped = f"no lower validation loss in {train_params['patience']} evaluations after step {state.best_global_step}"
    else:
        stopped = f"max_steps reached ({state.max_steps})"
    loss = evals.get(kept)
    return {
        "steps": state.global_step,
        "stopped": stopped,
        "stopped_by": stopped_by,
        "kept": train_params["keep"],
        "kept_step": kept,
        "kept_eval_loss": loss,
        "kept_bits_per_char": None if loss is None else round(bits_per_char(loss, val_chars_per_token), 5),
        "evaluations": len(evals),
    }


def describe(result):
    """One phrase: the step exported, its loss, why training stopped."""
    which = "the lowest validation loss" if result["kept"] == "best" else "the last step"
    loss = "" if result["kept_eval_loss"] is None else f", validation loss {result['kept_eval_loss']:.4f} ({result['kept_bits_per_char']:.3f} bits/char)"
    return (f"step {result['kept_step']} of {result['steps']} kept ({which} of {result['evaluations']} evaluations{loss}); "
            f"stopped: {result['stopped']}")

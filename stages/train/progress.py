"""Training progress a person reads, from the main process: on a terminal one live line (step of
total, elapsed, time left at the measured speed, train loss, last validation bits per character,
tokens/s); without one, the same facts as a plain line every `every` steps. Each evaluation adds
one line: step, validation loss, bits per character, the best so far."""
import os
import sys
import time

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import TrainerCallback

from stages.blocks import bits_per_char
from stages.common import TERMINAL_ENV, log


def clock(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}:{seconds:02d}"


class ProgressCallback(TrainerCallback):
    def __init__(self, tokens_per_step, val_chars_per_token, every):
        self.tokens_per_step, self.val_chars_per_token, self.every = tokens_per_step, val_chars_per_token, every
        self.terminal = sys.stderr.isatty() or os.environ.get(TERMINAL_ENV) == "1"
        self.bar, self.loss, self.bits, self.best = None, None, None, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step, self.started = state.global_step, time.perf_counter()
        if state.best_metric is not None:  # resumed: the best evaluation so far
            self.best = bits_per_char(state.best_metric, self.val_chars_per_token)
        if state.is_world_process_zero and self.terminal:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True,
                            bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}")
            self.lines_above = logging_redirect_tqdm()  # log lines go above the live line, not into it
            self.lines_above.__enter__()

    def figures(self, step):
        """tokens/s since this process started training, and the facts known at `step`."""
        elapsed = time.perf_counter() - self.started
        tokens_per_sec = (step - self.first_step) * self.tokens_per_step / elapsed if elapsed > 0 else 0
        loss = "" if self.loss is None else f"loss {self.loss:.3f}"
        bits = "" if self.bits is None else f"val {self.bits:.3f} bits/char"
        return ", ".join(filter(None, [loss, bits, f"{tokens_per_sec:,.0f} tokens/s"]))

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        step = state.global_step
        if self.bar is not None:
            self.bar.set_postfix_str(self.figures(step), refresh=False)
            self.bar.update(step - self.bar.n)
        elif step % self.every == 0 or step == state.max_steps:
            elapsed = time.perf_counter() - self.started
            left = elapsed / (step - self.first_step) * (state.max_steps - step)
            log.info("train: step %d/%d, %s elapsed, %s left; %s", step, state.max_steps, clock(elapsed), clock(left), self.figures(step))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self.loss = logs["loss"]
        if "eval_loss" not in logs or not state.is_world_process_zero:
            return
        self.bits = bits_per_char(logs["eval_loss"], self.val_chars_per_token)
        self.best = self.bits if self.best is None else min(self.best, self.bits)
        log.info("train: step %d, validation loss %.4f (%.3f bits/char; best %.3f)", state.global_step, logs["eval_loss"], self.bits, self.best)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.lines_above.__exit__(None, None, None)

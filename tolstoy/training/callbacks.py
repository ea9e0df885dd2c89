"""Training metrics to DVCLive (metrics/train): losses, validation bits per character, learning
rate, tokens/s and MFU, main process only. Names never repeat a param's name (train/learning_rate,
not train/lr), so `dvc exp show` columns stay apart.

Training progress a person reads, from the main process: on a terminal one live line (step of
total, elapsed, time left at the measured speed, train loss, last validation bits per character,
tokens/s); without one, the same facts as a plain line every `every` steps. Each evaluation adds
one line: step, validation loss, bits per character, the best so far.
"""

import os
import sys
import time

from dvclive import Live
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import TrainerCallback

from tolstoy.console import TERMINAL_ENV, log
from tolstoy.data.blocks import bits_per_char

# Trainer's log keys -> DVCLive metric names.
LIVE_NAMES = {
    "loss": "train/loss",
    "eval_loss": "eval/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
}


def open_live(live_dir, resumed_after_step):
    """DVCLive writer (dvc.yaml is never touched); when resuming, rows logged after the
    checkpoint are dropped first, since they are logged again."""
    if resumed_after_step is not None:
        for tsv in (live_dir / "plots").rglob("*.tsv"):
            rows = tsv.read_text().splitlines()
            kept = rows[:1] + [row for row in rows[1:] if int(row.split("\t")[0]) <= resumed_after_step]
            tsv.write_text("\n".join(kept) + "\n")
    return Live(str(live_dir), resume=resumed_after_step is not None, dvcyaml=False, save_dvc_exp=False)


class LiveCallback(TrainerCallback):
    """Streams losses, learning rate, tokens/s and MFU to DVCLive; only the main process writes."""

    def __init__(self, live, tokens_per_step, flops_per_token, peak, val_chars_per_token):
        self.live, self.tokens_per_step = live, tokens_per_step
        self.flops_per_token, self.peak = flops_per_token, peak
        self.val_chars_per_token = val_chars_per_token  # turns eval loss into bits per character
        self.last_step, self.last_time = 0, time.perf_counter()
        self.warned = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_step, self.last_time = state.global_step, time.perf_counter()
        if state.is_world_process_zero:
            self.live.log_param("mfu_peak_tflops", round(self.peak / 1e12, 3))  # what train/mfu divides by

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        self.live.step = state.global_step
        for key, name in LIVE_NAMES.items():
            if key in logs:
                self.live.log_metric(name, logs[key])
        if "eval_loss" in logs:
            self.live.log_metric("eval/bits_per_char", bits_per_char(logs["eval_loss"], self.val_chars_per_token))
        if "loss" in logs and state.global_step > self.last_step:
            now = time.perf_counter()
            tokens_per_sec = (state.global_step - self.last_step) * self.tokens_per_step / (now - self.last_time)
            self.live.log_metric("train/tokens_per_sec", tokens_per_sec)
            mfu = tokens_per_sec * self.flops_per_token / self.peak
            self.live.log_metric("train/mfu", mfu)
            if mfu > 1 and not self.warned:
                log.warning(
                    "train: MFU %.0f%% is over 100%%: the measured peak, %.3g TFLOP/s, is low (a "
                    "busy machine while it was probed)",
                    100 * mfu,
                    self.peak / 1e12,
                )
                self.warned = True
            self.last_step, self.last_time = state.global_step, now
        if "train_runtime" in logs:
            self.live.log_metric("train/runtime_sec", logs["train_runtime"], plot=False)
        self.live.next_step()


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
            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}",
            )
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
            log.info(
                "train: step %d/%d, %s elapsed, %s left; %s",
                step,
                state.max_steps,
                clock(elapsed),
                clock(left),
                self.figures(step),
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self.loss = logs["loss"]
        if "eval_loss" not in logs or not state.is_world_process_zero:
            return
        self.bits = bits_per_char(logs["eval_loss"], self.val_chars_per_token)
        self.best = self.bits if self.best is None else min(self.best, self.bits)
        log.info(
            "train: step %d, validation loss %.4f (%.3f bits/char; best %.3f)",
            state.global_step,
            logs["eval_loss"],
            self.bits,
            self.best,
        )

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.lines_above.__exit__(None, None, None)

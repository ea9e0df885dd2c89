"""Training metrics to DVCLive (metrics/train): losses, validation bits per character, learning
rate, tokens/s and MFU, main process only. Names never repeat a param's name (train/learning_rate,
not train/lr), so `dvc exp show` columns stay apart."""
import time

from dvclive import Live
from transformers import TrainerCallback

from stages.blocks import bits_per_char
from stages.common import log

# Trainer's log keys -> DVCLive metric names.
LIVE_NAMES = {"loss": "train/loss", "eval_loss": "eval/loss", "learning_rate": "train/learning_rate", "grad_norm": "train/grad_norm"}


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
                log.warning("train: MFU %.0f%% is over 100%%: the measured peak, %.3g TFLOP/s, is low (a busy machine while it was probed)", 100 * mfu, self.peak / 1e12)
                self.warned = True
            self.last_step, self.last_time = state.global_step, now
        if "train_runtime" in logs:
            self.live.log_metric("train/runtime_sec", logs["train_runtime"], plot=False)
        self.live.next_step()

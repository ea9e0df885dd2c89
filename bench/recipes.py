"""The two recipes bench.performance compares, on the stages' own data, models and Trainer settings:
the tutorial's (GPT-2 with GPT2Config's defaults, Trainer's defaults, fp32) and this project's
(the train stage's model builder and training arguments, with a precision and compile)."""

import dataclasses
import functools
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import MethodType

import torch
import yaml
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments
from transformers.modeling_outputs import CausalLMOutput

from bench.workspace import ROOT, python_env, stage_command
from tolstoy.config.params import ModelParams, TrainParams
from tolstoy.data.blocks import Blocks
from tolstoy.device import on_gpu, peak_flops
from tolstoy.model.build import VOCAB_MULTIPLE, loss_only, scratch_model
from tolstoy.model.loss import with_causal_lm_loss
from tolstoy.training.arguments import training_arguments
from tolstoy.training.plan import model_flops_per_token

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
# The tutorial's shape: GPT-2 6 x 384, block 1024, a 30k vocabulary (trained on the same documents)
TUTORIAL_SHAPE = {"n_layer": 6, "n_head": 6, "n_embd": 384, "n_positions": 1024}
TUTORIAL_VOCAB = 30000
# The tutorial's learning rate and warm-up with Trainer's other defaults. This project's settings
# train with them too when compared with the tutorial's, so that equal math gives equal losses.
TUTORIAL_OPTIMIZER = {
    "lr": 5e-5,
    "warmup_steps": 200,
    "lr_scheduler": "linear",
    "weight_decay": 0.0,
    "adam_beta2": 0.999,
    "max_grad_norm": 1.0,
    "seed": 0,
}


@dataclasses.dataclass
class Shape:
    """A model shape to benchmark, its token blocks, and how many steps a real run of it takes."""

    name: str
    model_params: dict
    tokens: Path
    bench_steps: int
    batch: int
    planned_steps: int


def stage_tokens(work, overrides):
    """data/tokens of the tokenizer and tokenize stages run in `work` on this checkout's cleaned
    documents, with params.yaml's {section: {key: value}} overrides."""
    (work / "data/clean").mkdir(parents=True)
    shutil.copy(ROOT / "data/clean/docs.parquet", work / "data/clean/docs.parquet")
    params = {
        section: {**PARAMS[section], **overrides.get(section, {})} for section in ("tokenizer", "tokenize", "model")
    }
    (work / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    for stage in ("tokenizer", "tokenize"):
        subprocess.run(stage_command(stage), cwd=work, env=python_env(), check=True, capture_output=True)
    return work / "data/tokens"


@functools.lru_cache
def tutorial_tokens():
    work = Path(tempfile.mkdtemp(prefix="bench-tutorial-"))
    return stage_tokens(
        work, {"tokenizer": {"vocab_size": TUTORIAL_VOCAB}, "tokenize": {"block_size": TUTORIAL_SHAPE["n_positions"]}}
    )


@functools.lru_cache
def shapes():
    """The default model, and the tutorial's shape with the tutorial's 30 epochs over the mirror at batch 8."""
    tutorial = tutorial_tokens()
    meta = Blocks(tutorial, "train").meta
    tutorial_steps = 30 * (meta["train"]["tokens"] + meta["val"]["tokens"]) // (TUTORIAL_SHAPE["n_positions"] * 8)
    return [
        Shape("default", PARAMS["model"], ROOT / "data/tokens", 40, 8, PARAMS["train"]["max_steps"]),
        Shape("6x384/1024/30k", {**PARAMS["model"], **TUTORIAL_SHAPE}, tutorial, 8, 4, tutorial_steps),
    ]


def project_model(model_params, tokens, vocab_multiple=VOCAB_MULTIPLE, own_loss=True):
    """The train stage's model from scratch, training forward included, for the vocabulary of `tokens`;
    for comparison, with its vocabulary padded to another multiple, or with transformers' own loss."""
    meta = Blocks(tokens, "train").meta
    model = scratch_model(
        ModelParams(**model_params),
        meta["vocab_size"],
        meta["eot_id"],
        meta["eot_id"],
        PARAMS["train"]["attn_implementation"],
        vocab_multiple,
    )
    return training_forward(model, own_loss)


def training_forward(model, own_loss):
    """The train stage's forward (tolstoy/model/loss.py's loss), or one with transformers' loss."""
    return loss_only(model) if own_loss else transformers_loss(with_causal_lm_loss(model))


def transformers_loss(model):
    """The model's own forward with labels, the logits left out of the output: transformers'
    ForCausalLMLoss, which upcasts the whole logits tensor to fp32."""
    full_forward = type(model).forward

    @functools.wraps(full_forward)
    def forward(self, *args, **kwargs):
        return CausalLMOutput(loss=full_forward(self, *args, **kwargs).loss)

    model.forward = MethodType(forward, model)
    return model


def tutorial_model(model_params, tokens):
    """The tutorial's model: GPT2Config's defaults (dropout 0.1) in the given shape."""
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=Blocks(tokens, "train").meta["vocab_size"], **{key: model_params[key] for key in TUTORIAL_SHAPE}
        )
    )


def tutorial_arguments(**settings):
    """The tutorial's Trainer: library defaults, fp32, its learning rate and warm-up."""
    return TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        learning_rate=5e-5,
        warmup_steps=200,
        report_to="none",
        save_strategy="no",
        use_cpu=not on_gpu(),
        seed=0,
        disable_tqdm=True,
        **settings,
    )


def project_arguments(steps, batch, log_every, precision, compile_model):
    """The train stage's TrainingArguments for the tutorial's optimizer settings, without evaluations or checkpoints."""
    train_params = TrainParams(**{**PARAMS["train"], **TUTORIAL_OPTIMIZER, "logging_steps": log_every})
    args = training_arguments(
        train_params,
        steps,
        tempfile.mkdtemp(),
        micro_batch=batch,
        grad_accum=1,
        eval_batch=batch,
        precision=precision,
        compile_model=compile_model,
    )
    return dataclasses.replace(args, eval_strategy="no", save_strategy="no", load_best_model_at_end=False)


class StepTimer(TrainerCallback):
    """Per-step losses, and the wall time at the end of every step. Steady state is the second half
    of the steps: compilation, recompilations and allocator warm-up all fall in the first half,
    and what the first half took beyond its steady-state share is reported as warm-up seconds."""

    def __init__(self):
        self.losses, self.began, self.step_ends = [], None, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available() and state.global_step in (state.max_steps // 2, state.max_steps):
            torch.cuda.synchronize()  # the GPU's queue drained at the two ends of the steady-state window
        self.step_ends.append(time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self.losses.append(logs["loss"])

    def steady(self):
        """(seconds per step in steady state, warm-up seconds)."""
        half = len(self.step_ends) // 2
        per_step = (self.step_ends[-1] - self.step_ends[half - 1]) / (len(self.step_ends) - half)
        return per_step, max(0.0, self.step_ends[half - 1] - self.began - half * per_step)


@functools.lru_cache
def measured_peak(precision):
    """Measured once, before anything compiles: torch.compile leaves busy worker processes behind."""
    return peak_flops(precision)


def timed_training(model, blocks, args, precision):
    """tokens/s (steady state), warm-up seconds, MFU and the logged losses of Trainer(model, args) on blocks."""
    timer = StepTimer()
    Trainer(model=model, args=args, train_dataset=blocks, callbacks=[timer]).train()
    seconds_per_step, warmup_seconds = timer.steady()
    block_size = len(blocks[0]["input_ids"])
    tokens_per_sec = args.per_device_train_batch_size * block_size / seconds_per_step
    peak = measured_peak(precision)
    mfu = tokens_per_sec * model_flops_per_token(model, block_size) / peak
    return {
        "tokens_per_sec": round(tokens_per_sec, 1),
        "mfu_%": round(100 * mfu, 1),
        "peak_gflops": round(peak / 1e9, 1),
        "mfu_check": "OVER 100%: peak probe low" if mfu > 1 else "",
        "warmup_s": round(warmup_seconds, 1),
        "seconds_per_step": seconds_per_step,
        "losses": timer.losses,
    }


def train_run(shape, recipe, precision="fp32", compile_model=False, arguments=None, **model_options):
    """timed_training of the shape's bench steps, a loss logged at every step: the tutorial's
    recipe, or this project's settings with the given precision and compile (and project_model's
    options, and other TrainingArguments values in `arguments`)."""
    torch.manual_seed(0)
    blocks = Blocks(shape.tokens, "train", limit=512)
    if recipe == "tutorial":
        precision, model = "fp32", tutorial_model(shape.model_params, shape.tokens)
        args = tutorial_arguments(per_device_train_batch_size=shape.batch, max_steps=shape.bench_steps, logging_steps=1)
    else:
        model = project_model(shape.model_params, shape.tokens, **model_options)
        args = dataclasses.replace(
            project_arguments(shape.bench_steps, shape.batch, 1, precision, compile_model), **(arguments or {})
        )
    return {
        "recipe": recipe,
        "precision": precision,
        "compile": compile_model,
        **timed_training(model, blocks, args, precision),
    }

"""train: GPT-2 from scratch (shape from params.model) or fine-tuned from model.base, with Trainer.

Run by stages.training.launch under `accelerate launch`; every process runs main(). Checkpoints
go to models/checkpoints, which DVC keeps between runs (persist): a run resumes from the latest
complete checkpoint made by the same code, params, tokenizer, data and runtime, and a finished
run with nothing changed puts its own model and cost record back (see stages/training/resume.py);
a checkpoint is used only while its files match the seal written when it was saved
(stages/training/seal.py). A process that loses a peer stops naming it (stages/training/peers.py).
Train/eval loss, learning rate, tokens/s and MFU go to DVCLive (metrics/train) from the main process.
"""
import datetime
import logging
import os

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from stages.base import base_directory
from stages.blocks import Blocks
from stages.common import StageError, atomic_path, log, reading, run_stage
from stages.params import check_context, load_params
from stages.paths import CHECKPOINTS, MODEL, TOKENIZER, TOKENS, TRAIN_COST, TRAIN_LIVE
from stages.training import peers, resume
from stages.training.export import SAMPLING, model_card, write_generation_config
from stages.training.fingerprint import fingerprint
from stages.training.forward import loss_only
from stages.training.keep import describe, keep_arguments, outcome, stop_callbacks
from stages.training.live import LiveCallback, open_live
from stages.training.plan import make_plan, on_gpu, peak_flops, record_cost, total_steps
from stages.training.seal import SealCheckpoints


def load_base(model_params, tokenizer, block_size, attn_implementation):
    base, directory = model_params["base"], base_directory(model_params)
    with reading(directory, f"the model of model.base={base!r}"):
        model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=False, attn_implementation=attn_implementation)
        base_vocab = AutoTokenizer.from_pretrained(directory).get_vocab()
    if base_vocab != tokenizer.get_vocab():
        raise StageError(f"{TOKENIZER} is not the tokenizer of model.base={base!r}: re-run the tokenizer stage")
    context = model.config.max_position_embeddings
    if block_size > context:
        raise StageError(f"tokenize.block_size={block_size} is larger than the context of model.base={base!r} ({context})")
    return model


def scratch_model(model_params, vocab_size, end_of_text_id, pad_id, attn_implementation):
    """GPT-2 of the shape in params.model, freshly initialised."""
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=vocab_size,
        n_positions=model_params["n_positions"],
        n_embd=model_params["n_embd"],
        n_layer=model_params["n_layer"],
        n_head=model_params["n_head"],
        resid_pdrop=model_params["dropout"],
        embd_pdrop=model_params["dropout"],
        attn_pdrop=model_params["dropout"],
        bos_token_id=end_of_text_id,
        eos_token_id=end_of_text_id,
        pad_token_id=pad_id,
        attn_implementation=attn_implementation,
    ))


def build_model(model_params, tokenizer, block_size, attn_implementation):
    if model_params["base"]:
        model = load_base(model_params, tokenizer, block_size, attn_implementation)
    else:
        model = scratch_model(model_params, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, attn_implementation)
    # The loss predicts labels[..., 1:]. GPT-2's class name does not say so, and Trainer, told
    # nothing, would divide the summed loss by every label: low by 1/block_size in training and evaluation.
    model.loss_type = "ForCausalLM"
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise StageError(f"the tokenizer has {len(tokenizer)} tokens but the model's embeddings have {rows} rows")
    tokenizer.model_max_length = model.config.max_position_embeddings  # exported: clients truncate to the context
    tokenizer.truncation_side = "left"  # a prompt keeps its end, which the continuation follows
    return loss_only(model)


def speed_settings(precision, compile_model):
    """The Trainer settings that make this project's training fast (bench.performance compares them)."""
    return {"optim": "adamw_torch_fused", "bf16": precision == "bf16", "fp16": precision == "fp16", "torch_compile": compile_model}


def training_arguments(train_params, plan, steps, eval_batch):
    return TrainingArguments(
        output_dir=str(CHECKPOINTS),
        per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=eval_batch,
        gradient_accumulation_steps=plan.grad_accum,
        learning_rate=train_params["lr"],
        lr_scheduler_type=train_params["lr_scheduler"],
        warmup_steps=train_params["warmup_steps"],
        max_steps=steps,
        weight_decay=train_params["weight_decay"],
        adam_beta2=train_params["adam_beta2"],
        max_grad_norm=train_params["max_grad_norm"],
        seed=train_params["seed"],
        eval_strategy="steps",
        eval_steps=train_params["eval_steps"],
        prediction_loss_only=True,  # evaluation gathers no logits
        save_strategy="steps",
        save_steps=train_params["save_steps"],
        save_total_limit=train_params["save_total_limit"],
        logging_steps=train_params["logging_steps"],
        ddp_timeout=round(train_params["peer_timeout"]),
        disable_tqdm=True,
        report_to="none",
        dataloader_drop_last=True,
        ddp_find_unused_parameters=False,
        use_cpu=not on_gpu(),
        **keep_arguments(train_params),
        **speed_settings(plan.precision, plan.compile),
    )


def main():
    is_main, world_size = int(os.environ.get("RANK", "0")) == 0, int(os.environ.get("WORLD_SIZE", "1"))
    if not is_main:
        log.setLevel(logging.WARNING)
    if not on_gpu():  # accelerate launch sets OMP_NUM_THREADS=1: share the cores instead
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    model_params, train_params = load_params("model"), load_params("train")
    block_size, sample_params = load_params("tokenize")["block_size"], load_params("sample")
    check_context(model_params, block_size)
    with reading(TOKENIZER, "a tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    # joins the other processes now: they take rank 0's choice of precision and compile
    PartialState(cpu=not on_gpu(), timeout=datetime.timedelta(seconds=train_params["peer_timeout"]))
    torch.manual_seed(train_params["seed"])
    model = build_model(model_params, tokenizer, block_size, train_params["attn_implementation"])
    train_data, eval_data = Blocks(TOKENS, "train"), Blocks(TOKENS, "val", limit=train_params["eval_blocks"])
    steps = total_steps(train_params, len(train_data), world_size)
    made_with = fingerprint(model_params, train_params, block_size, TOKENIZER, TOKENS, None, world_size)  # precision: once chosen
    plan = make_plan(model, train_params, block_size, steps, kept=resume.kept_choice(CHECKPOINTS, made_with))
    # evaluation drops an incomplete last batch (dataloader_drop_last): a batch never exceeds a process's blocks
    args = training_arguments(train_params, plan, steps, max(1, min(plan.micro_batch, len(eval_data) // world_size)))
    made_with["runtime"]["precision"] = plan.precision
    checkpoint = None
    if is_main:  # the only process that removes or marks checkpoints: workers' workspaces stay as they are
        checkpoint = resume.checkpoint_to_resume(CHECKPOINTS, made_with, steps)
        resume.mark(CHECKPOINTS, made_with, {"precision": plan.precision, "compile": plan.compile})
    checkpoint = resume.agree_with_main(made_with, checkpoint)
    if resume.is_final(checkpoint):
        if is_main:
            resume.restore_final(CHECKPOINTS, MODEL, TRAIN_COST)
        log.info("train: %s holds the finished run, made by this code, params and data: its model and cost record are restored", checkpoint)
    else:
        done = resume.checkpoint_step(checkpoint) if checkpoint else 0
        estimate = plan.estimate(steps - done)
        log_plan(plan, estimate, checkpoint, steps - done)
        trainer = Trainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data, processing_class=tokenizer,
                          callbacks=stop_callbacks(train_params))
        params = {"model": model_params, "train": train_params, "tokenize.block_size": block_size}
        train_and_export(trainer, plan, estimate, checkpoint, params, made_with["base"])
    if is_main:  # the sampling defaults are not part of what training computes: written either way
        write_generation_config(MODEL, tokenizer, {key: sample_params[key] for key in SAMPLING})
    peers.leave_together()


def log_plan(plan, estimate, checkpoint, steps):
    log.info(
        "train: %.2fM parameters, %s%s (by %s), %s; plan: %d steps x %d tokens = %.3g FLOPs, about %.0fs, peak %.2f GiB, %.0f MiB per checkpoint",
        plan.n_params / 1e6, plan.precision, ", compiled" if plan.compile else "", plan.choice["chosen_by"], f"resuming from {checkpoint}" if checkpoint else "from the start",
        steps, plan.tokens_per_step, estimate["flops"], estimate["seconds"], estimate["peak_gib"], estimate["checkpoint_mib"],
    )


def train_and_export(trainer, plan, estimate, checkpoint, params, base):
    """Train from `checkpoint` (or the start) to the last step or an early stop; the main process
    exports the model kept (train.keep), the cost record and the finished run's copy in final/."""
    is_main, world_size = trainer.args.process_index == 0, trainer.args.world_size
    done = resume.checkpoint_step(checkpoint) if checkpoint else 0
    live = open_live(TRAIN_LIVE, done if checkpoint else None) if is_main else None
    eval_data = trainer.eval_dataset
    trainer.add_callback(LiveCallback(live, plan.tokens_per_step, plan.flops_per_token, peak_flops(plan.precision) * world_size, eval_data.chars_per_token))
    trainer.add_callback(SealCheckpoints())
    resume.quiet_tied_weights_warning()
    with peers.watched():
        run = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    result = outcome(trainer.state, params["train"], eval_data.chars_per_token)
    if is_main:
        export_run(trainer, params, trainer.train_dataset.meta, base, result)
        live.end()
        record_cost(TRAIN_COST, estimate, run.metrics["train_runtime"], result, resume.latest_checkpoint(CHECKPOINTS))
        resume.keep_final(CHECKPOINTS, MODEL, TRAIN_COST)
    log.info("train: %s; final train loss %.4f, %.0fs (estimated %.0fs)", describe(result), run.training_loss,
             run.metrics["train_runtime"], estimate["seconds"])


def export_run(trainer, params, tokens_meta, base, result):
    """The trained model, its tokenizer and its model card, into models/model in one move."""
    with atomic_path(MODEL) as tmp:
        trainer.save_model(tmp)
        card = model_card(trainer.model.config, params, tokens_meta, trainer.state.log_history, base, result)
        (tmp / "README.md").write_text(card, encoding="utf-8")


if __name__ == "__main__":
    run_stage(main)

"""Trainer's settings for a run: params.train, the plan's micro-batches, precision and compile."""
from transformers import TrainingArguments

from stages.paths import CHECKPOINTS
from stages.train.device import on_gpu
from stages.train.keep import keep_arguments


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

"""The accelerate configs under configs/accelerate/ (train.accelerate_config): which of their keys the
launcher reads, and whether it can run this project's training with one."""

import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel

from tolstoy.config.fields import BOOLEAN, STRICT, TEXT, Allowed, NotAllowed, choice, integer, parse, satisfying

ACCELERATE_CONFIGS = Path("configs/accelerate")


class AccelerateConfig(BaseModel):
    """The keys of an accelerate config that `accelerate launch` reads for this project's runs: one process
    ('NO') or DDP under torchrun ('MULTI_GPU': GPUs, or the CPU with use_cpu). Each may be left out."""

    model_config = STRICT

    compute_environment: choice("LOCAL_MACHINE") = None
    distributed_type: choice("NO", "MULTI_GPU") = None
    """NO: one process; MULTI_GPU: DDP under torchrun, on GPUs or (use_cpu) CPU processes."""
    num_processes: integer(1, 65536) = None
    """Training processes on all machines together."""
    num_machines: integer(1, 65536) = None
    machine_rank: integer(0) = None
    """This machine's number: 0 runs the stage, the others tools.train_worker."""
    main_process_ip: TEXT = None
    """Rank 0's address, which the other machines reach."""
    main_process_port: integer(1, 65535) = None
    mixed_precision: Annotated[
        str, satisfying(lambda v: v == "no"), Allowed("'no' (the precision is train.precision)")
    ] = None
    use_cpu: BOOLEAN = None
    rdzv_backend: choice("static", "c10d") = None
    same_network: BOOLEAN = None
    gpu_ids: Annotated[
        str,
        satisfying(lambda v: bool(re.fullmatch(r"all|\d+(,\d+)*", v))),
        Allowed("'all' or GPU numbers separated by commas, quoted"),
    ] = None
    debug: BOOLEAN = None


# Keys that `accelerate config` writes that change nothing the training computes (TPU, CPU affinity,
# notebook launchers), and plugin settings, which must be empty: training is DDP, compile is train.compile.
IGNORED_KEYS = {
    "downcast_bf16",
    "enable_cpu_affinity",
    "main_training_function",
    "tpu_env",
    "tpu_use_cluster",
    "tpu_use_sudo",
}
EMPTY_KEYS = {
    "dynamo_config",
    "deepspeed_config",
    "fsdp_config",
    "megatron_lm_config",
    "fp8_config",
    "parallelism_config",
    "mpirun_config",
}


def config_uses_cpu(config_path):
    """Whether the accelerate config at config_path says use_cpu."""
    return bool(yaml.safe_load(Path(config_path).read_text(encoding="utf-8")).get("use_cpu"))


def accelerate_config_problem(path):
    """Why `accelerate launch` cannot run this project's training with the config at `path` (None if it can)."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return f"cannot be read ({type(error).__name__})"
    if not isinstance(values, dict):
        return "is not a mapping of keys to values"
    for key, value in values.items():
        if key in EMPTY_KEYS and value:
            return f"{key} must be empty (training is DDP; compile is train.compile)"
        if key not in {*AccelerateConfig.model_fields, *IGNORED_KEYS, *EMPTY_KEYS}:
            return f"unknown key {key!r} (the launcher reads {', '.join(AccelerateConfig.model_fields)})"
    try:
        config = parse(
            AccelerateConfig, {k: v for k, v in values.items() if k in AccelerateConfig.model_fields and v is not None}
        )
    except NotAllowed as problem:
        return str(problem)
    missing = [key for key in ("distributed_type", "num_processes", "num_machines") if getattr(config, key) is None]
    if missing:
        return f"{', '.join(missing)} must be set"
    processes, machines, rank = config.num_processes, config.num_machines, config.machine_rank or 0
    if rank >= machines:
        return f"machine_rank={rank} must be < num_machines={machines}"
    if config.distributed_type == "NO" and processes > 1:
        return f"num_processes={processes} needs distributed_type 'MULTI_GPU' ('NO' runs one process)"
    if processes % machines:
        return f"num_processes={processes} must be a multiple of num_machines={machines} (as many on each)"
    if machines > 1 and not config.main_process_ip:
        return f"main_process_ip must be rank 0's address (num_machines={machines})"
    return None

"""What a param value may be: one Rule per key, built from the kinds below, each saying what is allowed."""

import math
import re
from pathlib import Path

import yaml

BASES = Path("bases")  # where local bases live: model.base names a folder under it


class Rule:
    """One key's rule: `problem(value)` is None when the value is allowed."""

    def __init__(self, allowed, test):
        self.allowed, self.test = allowed, test

    def problem(self, value):
        return None if self.test(value) else self.allowed


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def integer(low=None, high=None):
    bounds = " and ".join(part for part in (low is not None and f">= {low}", high is not None and f"<= {high}") if part)
    return Rule(
        f"an integer{' ' + bounds if bounds else ''}",
        lambda v: _is_int(v) and (low is None or v >= low) and (high is None or v <= high),
    )


def number(above=None, at_least=None, below=None, at_most=None):
    limits = [(above, "> "), (at_least, ">= "), (below, "< "), (at_most, "<= ")]
    text = " and ".join(f"{sign}{limit}" for limit, sign in limits if limit is not None)
    return Rule(
        f"a number{' ' + text if text else ''}",
        lambda v: (
            _is_number(v)
            and (above is None or v > above)
            and (at_least is None or v >= at_least)
            and (below is None or v < below)
            and (at_most is None or v <= at_most)
        ),
    )


def zero_or(rule, meaning):
    """0 (which means `meaning`) or what `rule` allows."""
    return Rule(f"0 ({meaning}) or {rule.allowed}", lambda v: (_is_number(v) and v == 0) or rule.test(v))


def choice(*values):
    return Rule("one of " + ", ".join(map(repr, values)), lambda v: any(v == c and type(v) is type(c) for c in values))


def boolean():
    return choice(True, False)


def text():
    return Rule("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")


def header_value():
    """Text sent as an HTTP header: printable ASCII, so no line break can start another header."""
    return Rule(
        "a non-empty string of printable ASCII characters (no line break)",
        lambda v: isinstance(v, str) and v.strip() != "" and bool(re.fullmatch(r"[\x20-\x7e]+", v)),
    )


def text_list(item_ok=lambda v: True, item_allowed="non-empty strings", empty=False):
    def ok(value):
        return (
            isinstance(value, list)
            and (empty or value)
            and all(isinstance(v, str) and v.strip() and item_ok(v) for v in value)
        )

    return Rule(f"a {'' if empty else 'non-empty '}list of {item_allowed}", ok)


def source_groups():
    """{name: [sources]}: each name a word (letters, digits, - and _), each list as fetch.urls."""
    sources = text_list(is_source)

    def ok(value):
        return isinstance(value, dict) and all(
            isinstance(k, str) and re.fullmatch(r"[\w-]+", k) and sources.test(v) for k, v in value.items()
        )

    return Rule(
        "a mapping of group names (letters, digits, - and _) to non-empty lists of http(s):// or "
        "file:// URLs or local paths",
        ok,
    )


def is_source(value):
    return bool(re.match(r"(https?|file)://\S+$", value)) or not re.match(r"\w+://", value)


def is_xpath(value):
    from lxml import etree  # trafilatura's own XPath engine

    try:
        etree.XPath(value)
    except etree.XPathSyntaxError:
        return False
    return True


def is_base(value):
    """'' (from scratch), a directory inside bases/ (resolved: no `..` or link leads out of it) or a hub id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(value, str):
        return False
    if value == "":
        return True
    if Path(value).parts[:1] == (BASES.name,) or Path(value).exists():
        return Path(value).is_dir() and BASES.resolve() in Path(value).resolve().parents
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


ACCELERATE_CONFIGS = Path("configs/accelerate")
# The keys of an accelerate config that `accelerate launch` reads for this project's runs: one process
# ('NO') or DDP under torchrun ('MULTI_GPU': GPUs, or the CPU with use_cpu), precision from train.precision.
ACCELERATE_KEYS = {
    "compute_environment": choice("LOCAL_MACHINE"),
    "distributed_type": choice("NO", "MULTI_GPU"),
    "num_processes": integer(1, 65536),
    "num_machines": integer(1, 65536),
    "machine_rank": integer(0),
    "main_process_ip": text(),
    "main_process_port": integer(1, 65535),
    "mixed_precision": Rule("'no' (the precision is train.precision)", lambda v: v == "no"),
    "use_cpu": boolean(),
    "rdzv_backend": choice("static", "c10d"),
    "same_network": boolean(),
    "gpu_ids": Rule(
        "'all' or GPU numbers separated by commas, quoted",
        lambda v: isinstance(v, str) and bool(re.fullmatch(r"all|\d+(,\d+)*", v)),
    ),
    "debug": boolean(),
}
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
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return f"cannot be read ({type(error).__name__})"
    if not isinstance(config, dict):
        return "is not a mapping of keys to values"
    for key, value in config.items():
        if key in EMPTY_KEYS and value:
            return f"{key} must be empty (training is DDP; compile is train.compile)"
        if key not in {*ACCELERATE_KEYS, *IGNORED_KEYS, *EMPTY_KEYS}:
            return f"unknown key {key!r} (the launcher reads {', '.join(ACCELERATE_KEYS)})"
        if key in ACCELERATE_KEYS and value is not None and ACCELERATE_KEYS[key].problem(value):
            return f"{key}={value!r} must be {ACCELERATE_KEYS[key].problem(value)}"
    missing = [key for key in ("distributed_type", "num_processes", "num_machines") if config.get(key) is None]
    if missing:
        return f"{', '.join(missing)} must be set"
    processes, machines = config["num_processes"], config["num_machines"]
    rank = config.get("machine_rank") or 0
    if rank >= machines:
        return f"machine_rank={rank} must be < num_machines={machines}"
    if config["distributed_type"] == "NO" and processes > 1:
        return f"num_processes={processes} needs distributed_type 'MULTI_GPU' ('NO' runs one process)"
    if processes % machines:
        return f"num_processes={processes} must be a multiple of num_machines={machines} (as many on each)"
    if machines > 1 and not config.get("main_process_ip"):
        return f"main_process_ip must be rank 0's address (num_machines={machines})"
    return None


class AccelerateConfig(Rule):
    """train.accelerate_config: a file under configs/accelerate/ (validate depends on that folder) that the
    launcher can run."""

    def __init__(self):
        super().__init__(f"an accelerate config file under {ACCELERATE_CONFIGS}/", None)

    def problem(self, value):
        if not isinstance(value, str) or ACCELERATE_CONFIGS.resolve() not in Path(value).resolve().parents:
            return self.allowed
        if not Path(value).is_file():
            return f"{self.allowed} (there is no such file)"
        problem = accelerate_config_problem(value)
        return f"{self.allowed} that the launcher can run ({problem})" if problem else None

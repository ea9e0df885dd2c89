"""params.yaml: every key of every section with its type and allowed values, checked before any work.

`load_params(section)` returns a section only once all its keys are present, known and valid;
otherwise a StageError names the key, the value and what is allowed.
"""

import difflib
import re
from pathlib import Path

import yaml

from tolstoy import StageError
from tolstoy.config.rules import (
    AccelerateConfig,
    Rule,
    boolean,
    choice,
    header_value,
    integer,
    is_base,
    is_source,
    is_xpath,
    number,
    source_groups,
    text,
    text_list,
    zero_or,
)
from tolstoy.data.sources import check_sources

PARAMS = Path("params.yaml")


SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)

# The sample params that are the exported model's generation defaults (generation_config.json).
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty")
SEED = integer(0, 2**32 - 1)  # numpy's seeds (transformers.set_seed)
BATCH = integer(1, 4096)  # blocks; the train plan looks for a micro-batch among the batch's divisors
# Logits are divided by the temperature and by a repetition penalty: smaller values overflow float32 to inf.
SAMPLING_FACTOR = number(at_least=1e-3, at_most=100)
DAY = 86400  # seconds: the longest wait fetch allows (far longer ones overflow the clock of sockets and sleeps)
SCHEMA = {
    "fetch": {
        "urls": text_list(is_source, "http(s):// or file:// URLs or local paths"),
        "connect_timeout": number(above=0, at_most=DAY),
        "read_timeout": number(above=0, at_most=DAY),
        "max_seconds": number(above=0, at_most=DAY),
        "retries": integer(0, 100),
        "backoff": number(at_least=0, at_most=DAY),
        "backoff_max": number(at_least=0, at_most=DAY),
        "max_redirects": integer(0, 100),
        "max_bytes": integer(1),
        "delay": number(at_least=0, at_most=DAY),
        "user_agent": header_value(),
        "on_error": choice("fail", "skip"),
    },
    "clean": {
        "prune_xpath": text_list(is_xpath, "valid XPath expressions", empty=True),
        "drop_footnote_markers": boolean(),
        "drop_apparatus": boolean(),
        "dedup": boolean(),
        "dedup_min_chars": integer(1),
        "min_chars": integer(0),
    },
    "tokenizer": {
        "vocab_size": integer(257, 65536 * 16),  # the 256 byte symbols plus end-of-text, at least
        "min_frequency": integer(1),
    },
    "tokenize": {
        "block_size": integer(2),
        "span_chars": integer(1),
        "val_fraction": number(above=0, at_most=0.5),
        "seed": SEED,
    },
    "model": {
        "base": Rule(
            "'' (from scratch), a model directory under bases/ (a dependency of the tokenizer and train stages) "
            "or a hub id like owner/name",
            is_base,
        ),
        "revision": text(),
        "n_layer": integer(1),
        "n_head": integer(1),
        "n_embd": integer(1),
        "n_positions": integer(2),
        "dropout": number(at_least=0, below=1),
    },
    "train": {
        "lr": number(above=0, at_most=1),
        "lr_scheduler": choice(*SCHEDULERS),
        "warmup_steps": integer(0),
        "max_steps": integer(0),
        "epochs": number(at_least=0),
        "batch_size": BATCH,
        "grad_accum": BATCH,
        "weight_decay": number(at_least=0, at_most=1),  # AdamW scales the weights by 1 - lr * weight_decay
        "adam_beta2": number(above=0, below=1),
        "max_grad_norm": number(at_least=0),
        "seed": SEED,
        "precision": choice("auto", "fp32", "bf16", "fp16"),
        "compile": choice("auto", True, False),
        "attn_implementation": choice("sdpa", "eager"),
        "accelerate_config": AccelerateConfig(),
        "eval_steps": integer(1),
        "eval_blocks": integer(1),
        "logging_steps": integer(1),
        "save_steps": integer(1),
        "save_total_limit": integer(1),
        "keep": choice("best", "last"),
        "patience": integer(0),
        "peer_timeout": number(at_least=1, at_most=86400),  # whole seconds, to torch's rendezvous
    },
    "evaluate": {
        "batch_size": BATCH,
        "max_blocks": integer(0),
    },
    "groups": {
        "sources": source_groups(),
        "reference": Rule("'' or the name of one of groups.sources", lambda v: isinstance(v, str)),
        "max_blocks": integer(0),
    },
    "sample": {
        "prompts": text_list(),
        "max_new_tokens": integer(1),
        "temperature": zero_or(SAMPLING_FACTOR, "greedy"),
        "top_k": integer(0),
        "top_p": number(above=0, at_most=1),
        "repetition_penalty": SAMPLING_FACTOR,
        "seed": SEED,
    },
}


def _unknown(name, known):
    close = difflib.get_close_matches(name.rsplit(".", 1)[-1], known, n=1)
    prefix = name.rsplit(".", 1)[0] + "." if "." in name else ""
    return f"unknown key {name}" + (f" (did you mean {prefix}{close[0]}?)" if close else "")


def check_section(section, values):
    """Raise a StageError for the first missing, unknown or invalid key of `section`."""
    rules = SCHEMA[section]
    if not isinstance(values, dict):
        raise StageError(f"{PARAMS}: {section} must be a mapping of keys to values, not {values!r}")
    for key in values:
        if key not in rules:
            raise StageError(f"{PARAMS}: {_unknown(f'{section}.{key}', rules)}")
    for key, rule in rules.items():
        if key not in values:
            raise StageError(f"{PARAMS}: {section}.{key} is missing ({rule.allowed})")
        problem = rule.problem(values[key])
        if problem:
            raise StageError(f"{PARAMS}: {section}.{key}={values[key]!r} must be {problem}")
    if section == "fetch":
        check_sources(values["urls"])
    if section == "groups":
        check_groups(values)
    if section == "train" and not (values["max_steps"] > 0 or values["epochs"] > 0):
        raise StageError(
            f"{PARAMS}: train.max_steps={values['max_steps']} and train.epochs={values['epochs']}: one must be positive"
        )
    if section == "train" and values["keep"] == "best" and values["save_steps"] != values["eval_steps"]:
        raise StageError(
            f"{PARAMS}: train.keep='best' exports an evaluated checkpoint: train.save_steps={values['save_steps']} "
            f"must equal train.eval_steps={values['eval_steps']} (or set train.keep: last)"
        )
    if section == "model" and not values["base"] and values["n_embd"] % values["n_head"]:
        raise StageError(
            f"{PARAMS}: model.n_embd={values['n_embd']} must be divisible by model.n_head={values['n_head']}"
        )


def check_groups(values):
    for name, sources in values["sources"].items():
        check_sources(sources, f"groups.sources.{name}")
    if values["reference"] and values["reference"] not in values["sources"]:
        raise StageError(
            f"{PARAMS}: groups.reference={values['reference']!r} must be '' or one of groups.sources: "
            f"{', '.join(values['sources']) or 'none is set'}"
        )


class ParamsLoader(yaml.SafeLoader):
    """YAML read as DVC reads and writes params.yaml (YAML 1.2): `dvc exp run -S train.lr=5e-5`
    writes 5e-05, a number there but a string to YAML 1.1 without this resolver."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def read_params(path=PARAMS):
    try:
        params = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=ParamsLoader)
    except (OSError, yaml.YAMLError) as e:
        raise StageError(f"cannot read {path}: {e}") from None
    if not isinstance(params, dict):
        raise StageError(f"{path} must be a mapping of sections")
    return params


def load_params(section, path=PARAMS):
    """One section of params.yaml, checked key by key."""
    params = read_params(path)
    if section not in params:
        raise StageError(f"{path} has no '{section}' section")
    check_section(section, params[section])
    return params[section]


def check_all(params):
    """Every section, then the rules that span sections."""
    for section in params:
        if section not in SCHEMA:
            raise StageError(f"{PARAMS}: {_unknown(section, SCHEMA)}")
    for section in SCHEMA:
        if section not in params:
            raise StageError(f"{PARAMS} has no '{section}' section")
        check_section(section, params[section])
    check_context(params["model"], params["tokenize"]["block_size"])


def check_context(model_params, block_size):
    if not model_params["base"] and block_size > model_params["n_positions"]:
        raise StageError(
            f"{PARAMS}: tokenize.block_size={block_size} must be <= the model's context "
            f"model.n_positions={model_params['n_positions']}"
        )

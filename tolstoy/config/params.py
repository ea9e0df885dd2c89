"""params.yaml as typed sections: every key with its type, bounds and meaning, checked before any work.

`load_sections("model", "train")` reads params.yaml once and returns those sections as the models
below, once every key of each is present, known and allowed; otherwise a StageError names the key,
its value and what is allowed: `params.yaml: train.batch_size='eight' must be an integer >= 1 ...`.
"""

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, model_validator

from tolstoy import StageError
from tolstoy.config.accelerate import ACCELERATE_CONFIGS, accelerate_config_problem
from tolstoy.config.fields import (
    BOOLEAN,
    HEADER_VALUE,
    STRICT,
    TEXT,
    Allowed,
    NotAllowed,
    choice,
    integer,
    number,
    parse,
    satisfying,
    text_list,
    unknown_key,
    zero_or,
)
from tolstoy.data.sources import check_sources

PARAMS = Path("params.yaml")
BASES = Path("bases")  # where local bases live: model.base names a folder under it

# The sample params that are the exported model's generation defaults (generation_config.json).
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty")
SEED = integer(0, 2**32 - 1)  # numpy's seeds (transformers.set_seed)
BATCH = integer(1, 4096)  # blocks; the train plan looks for a micro-batch among the batch's divisors
# Logits are divided by the temperature and by a repetition penalty: smaller values overflow float32 to inf.
SAMPLING_FACTOR = number(at_least=1e-3, at_most=100)
DAY = 86400  # seconds: the longest wait fetch allows (far longer ones overflow the clock of sockets and sleeps)
SECONDS = number(above=0, at_most=DAY)


def is_source(value):
    return bool(re.match(r"(https?|file)://\S+$", value)) or not re.match(r"\w+://", value)


def is_xpath(value):
    from lxml import etree  # trafilatura's own XPath engine

    try:
        etree.XPath(value)
    except etree.XPathSyntaxError:
        return False
    return True


def is_base(value, bases):
    """'' (from scratch), a directory inside the folder `bases` (resolved: no `..` or link leads out of
    it) or a hub id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if value == "":
        return True
    if Path(value).parts[: len(bases.parts)] == bases.parts or Path(value).exists():
        return Path(value).is_dir() and bases.resolve() in Path(value).resolve().parents
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def a_base(value, info):
    """model.base, checked against the folder of local bases the stage names (BASES unless it names one)."""
    bases = Path((info.context or {}).get("bases", BASES))
    if not is_base(value, bases):
        raise ValueError(
            f"'' (from scratch), a model directory under {bases}/ (a dependency of the tokenizer and train "
            "stages) or a hub id like owner/name"
        )
    return value


ACCELERATE_FILE = f"an accelerate config file under {ACCELERATE_CONFIGS}/"


def runnable_accelerate_config(value):
    """`value` if it names an accelerate config the launcher can run; else a ValueError says what it must be."""
    if ACCELERATE_CONFIGS.resolve() not in Path(value).resolve().parents:
        raise ValueError(ACCELERATE_FILE)
    if not Path(value).is_file():
        raise ValueError(f"{ACCELERATE_FILE} (there is no such file)")
    if problem := accelerate_config_problem(value):
        raise ValueError(f"{ACCELERATE_FILE} that the launcher can run ({problem})")
    return value


SOURCES = text_list(is_source, "http(s):// or file:// URLs or local paths")


def are_source_groups(value):
    """{name: [sources]}: each name a word (letters, digits, - and _), each list as fetch.urls."""
    return all(
        re.fullmatch(r"[\w-]+", name) and sources and all(s.strip() and is_source(s) for s in sources)
        for name, sources in value.items()
    )


# Model validators below raise NotAllowed (or StageError) themselves: pydantic passes on what is not a
# ValueError, so a rule across keys keeps its own words.


class FetchParams(BaseModel):
    model_config = STRICT

    urls: SOURCES
    """The pages: http(s):// or file:// URLs, local paths, or local path patterns (*, ?, [...])."""
    connect_timeout: SECONDS
    """Seconds to wait for a connection."""
    read_timeout: SECONDS
    """Seconds to wait for the next byte of a response."""
    max_seconds: SECONDS
    """Seconds a response may take in all: one still arriving after this long is cut off."""
    retries: integer(0, 100)
    """Retries of a request after a connection error, a timeout, 429 or 5xx."""
    backoff: number(at_least=0, at_most=DAY)
    """Seconds before the first retry, doubled each retry, with jitter."""
    backoff_max: number(at_least=0, at_most=DAY)
    """The longest wait before a retry, in seconds, Retry-After included."""
    max_redirects: integer(0, 100)
    """Redirects followed for one page."""
    max_bytes: integer(1)
    """The largest response read: a larger one is cut off and reported."""
    delay: number(at_least=0, at_most=DAY)
    """Seconds between two requests to one host."""
    user_agent: HEADER_VALUE
    """The User-Agent header of every request."""
    on_error: choice("fail", "skip")
    """fail: a page that cannot be fetched stops the stage; skip: it is recorded in the manifest and left out."""

    @model_validator(mode="after")
    def _each_page_once(self):
        check_sources(self.urls)
        return self


class CleanParams(BaseModel):
    model_config = STRICT

    prune_xpath: text_list(is_xpath, "valid XPath expressions", empty=True)
    """XPath expressions of the site's chrome around the work, removed before extraction."""
    drop_footnote_markers: BOOLEAN
    """Remove editorial markers like [12] from the text."""
    drop_apparatus: BOOLEAN
    """Drop editorial lines: sources, OCR credits, notes, the site's "Author. Title" line."""
    dedup: BOOLEAN
    """Drop duplicate documents, and paragraphs repeated across documents."""
    dedup_min_chars: integer(1)
    """Paragraphs shorter than this may repeat ("- Да.")."""
    min_chars: integer(0)
    """A page that yields fewer characters of text is an error."""


class TokenizerParams(BaseModel):
    model_config = STRICT

    vocab_size: integer(257, 65536 * 16)
    """Tokens of the byte-level BPE trained from scratch: the 256 byte symbols, end-of-text and merges."""
    min_frequency: integer(1)
    """How often a pair must occur to be merged."""


class TokenizeParams(BaseModel):
    model_config = STRICT

    block_size: integer(2)
    """Tokens per training block (the context the model is trained on)."""
    span_chars: integer(1)
    """Validation is drawn as spans of this many characters."""
    val_fraction: number(above=0, at_most=0.5)
    """The share of spans held out for validation."""
    seed: SEED
    """Chooses the validation spans."""


class ModelParams(BaseModel):
    model_config = STRICT

    n_layer: integer(1)
    """Transformer blocks (from scratch)."""
    n_head: integer(1)
    """Attention heads per block (from scratch)."""
    n_embd: integer(1)
    """Width of the residual stream (from scratch): a multiple of n_head."""
    n_positions: integer(2)
    """The longest context (from scratch): at least tokenize.block_size."""
    dropout: number(at_least=0, below=1)
    """Dropout of the residual stream, embeddings and attention."""
    base: Annotated[
        str,
        AfterValidator(a_base),
        Allowed(
            "'' (from scratch), a model directory under bases/ (a dependency of the tokenizer and train stages) "
            "or a hub id like owner/name"
        ),
    ]
    """The model fine-tuned: a directory under bases/ (or the folder the stage's --bases names) or a hub
    id; '' trains GPT-2 from scratch."""
    revision: TEXT
    """The hub commit (or a branch, resolved and recorded) of a hub base."""

    @model_validator(mode="after")
    def _heads_divide_the_width(self):
        if not self.base and self.n_embd % self.n_head:
            raise NotAllowed(f"model.n_embd={self.n_embd} must be divisible by model.n_head={self.n_head}")
        return self


SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)


class TrainParams(BaseModel):
    model_config = STRICT

    lr: number(above=0, at_most=1)
    """The peak learning rate (AdamW)."""
    max_steps: integer(0)
    """Optimizer steps; 0: train for `epochs`."""
    batch_size: BATCH
    """Blocks per step on each process (the plan splits it into micro-batches that fit memory)."""
    warmup_steps: integer(0)
    """Steps of linear warm-up to the peak learning rate."""
    lr_scheduler: choice(*SCHEDULERS)
    """The learning rate's schedule after warm-up (transformers' names)."""
    epochs: number(at_least=0)
    """Passes over the training blocks, when max_steps is 0."""
    grad_accum: BATCH
    """Batches whose gradients are summed before a step."""
    weight_decay: number(at_least=0, at_most=1)  # AdamW scales the weights by 1 - lr * weight_decay
    """AdamW's decoupled weight decay."""
    adam_beta2: number(above=0, below=1)
    """AdamW's decay of the squared-gradient average."""
    max_grad_norm: number(at_least=0)
    """Gradients are clipped to this norm (0: never)."""
    keep: choice("best", "last")
    """best: export the evaluated step with the lowest validation loss; last: the last step."""
    patience: integer(0)
    """Evaluations in a row without a lower validation loss before training stops (0: never)."""
    eval_steps: integer(1)
    """Steps between evaluations."""
    eval_blocks: integer(1)
    """Validation blocks each evaluation scores."""
    precision: choice("auto", "fp32", "bf16", "fp16")
    """auto: the faster, timed here, of fp32 and the hardware's bf16 or fp16."""
    compile: Annotated[Literal["auto"] | bool, Allowed("one of 'auto', True, False")]
    """torch.compile; auto: timed here for runs over 2 minutes, on when the run gets 5% shorter."""
    attn_implementation: choice("sdpa", "eager", "sdpa_causal")
    """Attention as transformers computes it; sdpa_causal: SDPA's causal flag, no mask (blocks are whole)."""
    seed: SEED
    """Initial weights, data order and dropout."""
    logging_steps: integer(1)
    """Steps between logged training losses."""
    save_steps: integer(1)
    """Steps between checkpoints; with keep: best, equal to eval_steps."""
    save_total_limit: integer(1)
    """The newest checkpoints kept, besides the best one."""
    accelerate_config: Annotated[str, AfterValidator(runnable_accelerate_config), Allowed(ACCELERATE_FILE)]
    """Processes and machines: a file under configs/accelerate/ that the launcher can run."""
    peer_timeout: number(at_least=1, at_most=DAY)  # whole seconds, to torch's rendezvous
    """Seconds a training process waits for the others before it stops (several processes)."""

    @model_validator(mode="after")
    def _steps_and_keep(self):
        if not (self.max_steps > 0 or self.epochs > 0):
            raise NotAllowed(f"train.max_steps={self.max_steps} and train.epochs={self.epochs}: one must be positive")
        if self.keep == "best" and self.save_steps != self.eval_steps:
            raise NotAllowed(
                f"train.keep='best' exports an evaluated checkpoint: train.save_steps={self.save_steps} "
                f"must equal train.eval_steps={self.eval_steps} (or set train.keep: last)"
            )
        return self


class EvaluateParams(BaseModel):
    model_config = STRICT

    batch_size: BATCH
    """Blocks scored at once."""
    max_blocks: integer(0)
    """Validation blocks scored (0: every one)."""


class GroupsParams(BaseModel):
    model_config = STRICT

    sources: Annotated[
        dict[str, list[str]],
        satisfying(are_source_groups),
        Allowed(
            "a mapping of group names (letters, digits, - and _) to non-empty lists of http(s):// or "
            "file:// URLs or local paths"
        ),
    ]
    """Texts not trained on, each prepared like the training pages and scored by evaluate: name: sources."""
    reference: Annotated[str, Allowed("'' or the name of one of groups.sources")]
    """The group of the trained author's unseen works: a group's style gap is its bits/char minus this one's."""
    max_blocks: integer(0)
    """Blocks scored per group, spread evenly over its text (0: all)."""

    @model_validator(mode="after")
    def _sources_and_reference(self):
        for name, sources in self.sources.items():
            check_sources(sources, f"groups.sources.{name}")
        if self.reference and self.reference not in self.sources:
            raise NotAllowed(
                f"groups.reference={self.reference!r} must be '' or one of groups.sources: "
                f"{', '.join(self.sources) or 'none is set'}"
            )
        return self


class SampleParams(BaseModel):
    model_config = STRICT

    prompts: text_list()
    """The texts the model continues."""
    max_new_tokens: integer(1)
    """Tokens generated per prompt."""
    temperature: zero_or(1e-3, 100, "greedy")
    """Logits are divided by it before sampling; 0: greedy decoding."""
    top_k: integer(0)
    """Sample among the k likeliest tokens (0: all)."""
    top_p: number(above=0, at_most=1)
    """Sample among the likeliest tokens whose probabilities add up to p."""
    repetition_penalty: SAMPLING_FACTOR
    """Logits of tokens already in the text are divided by it."""
    seed: SEED
    """The sampling's random numbers."""


SECTIONS = {
    "fetch": FetchParams,
    "clean": CleanParams,
    "tokenizer": TokenizerParams,
    "tokenize": TokenizeParams,
    "model": ModelParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "groups": GroupsParams,
    "sample": SampleParams,
}


class Params(BaseModel):
    """The whole of params.yaml, each section checked, then the rule across sections."""

    model_config = STRICT

    fetch: FetchParams
    clean: CleanParams
    tokenizer: TokenizerParams
    tokenize: TokenizeParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    groups: GroupsParams
    sample: SampleParams

    @model_validator(mode="after")
    def _blocks_fit_the_context(self):
        check_context(self.model, self.tokenize.block_size)
        return self


def check_context(model_params, block_size):
    if not model_params.base and block_size > model_params.n_positions:
        raise StageError(
            f"{PARAMS}: tokenize.block_size={block_size} must be <= the model's context "
            f"model.n_positions={model_params.n_positions}"
        )


class ParamsLoader(yaml.SafeLoader):
    """YAML read as DVC reads and writes params.yaml (YAML 1.2): `dvc exp run -S train.lr=5e-5`
    writes 5e-05, a number there but a string to YAML 1.1 without this resolver."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def read_yaml(path):
    try:
        values = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=ParamsLoader)
    except (OSError, yaml.YAMLError) as e:
        raise StageError(f"cannot read {path}: {e}") from None
    if not isinstance(values, dict):
        raise StageError(f"{path} must be a mapping of sections")
    return values


def read_params(path=PARAMS, presets=()):
    """params.yaml as YAML, unchecked, with each preset's overrides ({section: {key: value}}) applied in order."""
    params = read_yaml(path)
    for preset in presets:
        for name, values in read_yaml(preset).items():
            if not isinstance(values, dict) or not isinstance(params.get(name), dict):
                raise StageError(f"{preset}: {name} must be a section of {path} and a mapping of its keys to values")
            params[name] = {**params[name], **values}
    return params


def params_source(presets=()):
    """What a params error names: params.yaml, with the presets applied to it."""
    return " with ".join(map(str, [PARAMS, *presets]))


def section(name, values, source=PARAMS, bases=BASES):
    """One section's values as its model, or a StageError naming the first key that is not allowed."""
    try:
        return parse(SECTIONS[name], values, f"{name}.", context={"bases": bases})
    except NotAllowed as problem:
        raise StageError(f"{source}: {problem}") from None


def load_sections(*names, presets=(), bases=BASES):
    """The named sections of params.yaml with the presets applied, each checked key by key (one read of
    each file), model and tokenize together when both are named. Local bases are directories in `bases`."""
    params = read_params(PARAMS, presets)
    for name in names:
        if name not in params:
            raise StageError(f"{PARAMS} has no '{name}' section")
    sections = {name: section(name, params[name], params_source(presets), bases) for name in names}
    if "model" in sections and "tokenize" in sections:
        check_context(sections["model"], sections["tokenize"].block_size)
    return tuple(sections.values())


def check_all(params, presets=(), bases=BASES):
    """Every section of `params` (read_params with `presets`), then the rule across sections."""
    source = params_source(presets)
    for name in params:
        if name not in SECTIONS:
            raise StageError(f"{source}: {unknown_key(name, SECTIONS)}")
    for name in SECTIONS:
        if name not in params:
            raise StageError(f"{PARAMS} has no '{name}' section")
    return Params(**{name: section(name, params[name], source, bases) for name in SECTIONS})


def stage_sections(args, *names):
    """The named sections for a stage, with the --preset (and --bases) of its command line (add_params_options)."""
    return load_sections(*names, presets=args.preset, bases=getattr(args, "bases", BASES))


def add_params_options(parser, bases=False):
    """--preset (and --bases) on a stage's command line, as dvc.yaml gives them to a recipe's stages."""
    parser.add_argument(
        "--preset",
        action="append",
        type=Path,
        default=[],
        help="a YAML file of params.yaml overrides, section by section, applied in order (among the stage's params)",
    )
    if bases:
        parser.add_argument(
            "--bases", type=Path, default=BASES, help=f"the folder of local base models (default {BASES})"
        )

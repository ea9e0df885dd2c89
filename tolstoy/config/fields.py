"""The kinds of value a setting may hold, as pydantic types that say in words what they allow, and
`parse`, which builds a settings model and names the first setting that is missing or not allowed.

Every model is strict: 8 is not "8", 2.0 is not 2 and 1 is not True, as YAML wrote them.
"""

import difflib
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, FiniteFloat, ValidationError
from pydantic_core import PydanticCustomError

STRICT = ConfigDict(strict=True, extra="forbid", frozen=True, use_attribute_docstrings=True)


@dataclass(frozen=True)
class Allowed:
    """What a field allows, in the words of an error line: `train.batch_size='eight' must be <text>`."""

    text: str


class NotAllowed(Exception):
    """A setting that is missing, unknown or not allowed, in words that name it."""


def satisfying(test):
    """A validator that refuses a value for which `test` is false (the field's Allowed says what it allows)."""

    def check(value):
        if not test(value):
            raise PydanticCustomError("not_allowed", "not allowed")
        return value

    return AfterValidator(check)


def _bounds(pairs):
    return " and ".join(f"{sign} {limit}" for sign, limit in pairs if limit is not None)


def integer(low=None, high=None):
    bounds = _bounds([(">=", low), ("<=", high)])
    return Annotated[int, Field(ge=low, le=high), Allowed(f"an integer{' ' + bounds if bounds else ''}")]


def number(above=None, at_least=None, below=None, at_most=None):
    """An int or a finite float, kept as written (2 stays 2)."""
    bounds = _bounds([(">", above), (">=", at_least), ("<", below), ("<=", at_most)])
    return Annotated[
        int | FiniteFloat,
        Field(gt=above, ge=at_least, lt=below, le=at_most),
        Allowed(f"a number{' ' + bounds if bounds else ''}"),
    ]


def zero_or(at_least, at_most, meaning):
    """0 (which means `meaning`) or a number from at_least to at_most."""
    return Annotated[
        int | FiniteFloat,
        satisfying(lambda v: v == 0 or at_least <= v <= at_most),
        Allowed(f"0 ({meaning}) or a number >= {at_least} and <= {at_most}"),
    ]


def choice(*values):
    return Annotated[Literal[values], Allowed("one of " + ", ".join(map(repr, values)))]


BOOLEAN = Annotated[bool, Allowed("one of True, False")]
TEXT = Annotated[str, satisfying(lambda v: v.strip() != ""), Allowed("a non-empty string")]
# Sent as an HTTP header: printable ASCII, so no line break can start another header.
HEADER_VALUE = Annotated[
    str,
    satisfying(lambda v: v.strip() != "" and bool(re.fullmatch(r"[\x20-\x7e]+", v))),
    Allowed("a non-empty string of printable ASCII characters (no line break)"),
]


def text_list(item_ok=lambda v: True, items="non-empty strings", empty=False):
    return Annotated[
        list[str],
        satisfying(lambda value: (empty or bool(value)) and all(v.strip() and item_ok(v) for v in value)),
        Allowed(f"a {'' if empty else 'non-empty '}list of {items}"),
    ]


def allowed(model, key):
    return next(m.text for m in model.model_fields[key].metadata if isinstance(m, Allowed))


def unknown_key(name, known):
    """`unknown key train.lrr (did you mean train.lr?)`: the closest known name, if one is close."""
    close = difflib.get_close_matches(name.rsplit(".", 1)[-1], known, n=1)
    prefix = name.rsplit(".", 1)[0] + "." if "." in name else ""
    return f"unknown key {name}" + (f" (did you mean {prefix}{close[0]}?)" if close else "")


def parse(model: type[BaseModel], values, prefix="", context=None):
    """`values` as `model` (its validators see `context`). NotAllowed names the first unknown key, else
    the first missing or refused field in the model's order: `{prefix}{key}={value!r} must be {what it allows}`."""
    if not isinstance(values, dict):
        raise NotAllowed(f"{prefix.rstrip('.')} must be a mapping of keys to values, not {values!r}")
    for key in values:
        if key not in model.model_fields:
            raise NotAllowed(unknown_key(f"{prefix}{key}", model.model_fields))
    try:
        return model.model_validate(values, context=context)
    except ValidationError as error:
        order = list(model.model_fields)
        first = min(error.errors(), key=lambda e: order.index(e["loc"][0]))
        key = first["loc"][0]
        if first["type"] == "missing":
            raise NotAllowed(f"{prefix}{key} is missing ({allowed(model, key)})") from None
        # a validator's own words (value_error) say more than the field's Allowed, as for a file's contents
        problem = str(first["ctx"]["error"]) if first["type"] == "value_error" else allowed(model, key)
        raise NotAllowed(f"{prefix}{key}={values[key]!r} must be {problem}") from None

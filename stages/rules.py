"""What a param value may be: one Rule per key, built from the kinds below, each saying what is allowed."""
import math
import re
from pathlib import Path

import yaml

from stages.paths import BASES


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
    return Rule(f"an integer{' ' + bounds if bounds else ''}",
                lambda v: _is_int(v) and (low is None or v >= low) and (high is None or v <= high))


def number(above=None, at_least=None, below=None, at_most=None):
    limits = [(above, "> "), (at_least, ">= "), (below, "< "), (at_most, "<= ")]
    text = " and ".join(f"{sign}{limit}" for limit, sign in limits if limit is not None)
    return Rule(f"a number{' ' + text if text else ''}", lambda v: _is_number(v)
                and (above is None or v > above) and (at_least is None or v >= at_least)
                and (below is None or v < below) and (at_most is None or v <= at_most))


def choice(*values):
    return Rule("one of " + ", ".join(map(repr, values)), lambda v: any(v == c and type(v) is type(c) for c in values))


def boolean():
    return choice(True, False)


def text():
    return Rule("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")


def header_value():
    """Text sent as an HTTP header: printable ASCII, so no line break can start another header."""
    return Rule("a non-empty string of printable ASCII characters (no line break)",
                lambda v: isinstance(v, str) and v.strip() != "" and bool(re.fullmatch(r"[\x20-\x7e]+", v)))


def text_list(item_ok=lambda v: True, item_allowed="non-empty strings", empty=False):
    def ok(value):
        return isinstance(value, list) and (empty or value) and all(isinstance(v, str) and v.strip() and item_ok(v) for v in value)
    return Rule(f"a {'' if empty else 'non-empty '}list of {item_allowed}", ok)


def source_groups():
    """{name: [sources]}: each name a word (letters, digits, - and _), each list as fetch.urls."""
    sources = text_list(is_source)

    def ok(value):
        return isinstance(value, dict) and all(isinstance(k, str) and re.fullmatch(r"[\w-]+", k) and sources.test(v) for k, v in value.items())
    return Rule("a mapping of group names (letters, digits, - and _) to non-empty lists of http(s):// or file:// URLs or local paths", ok)


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
    if not isinstance(value, str):
        return False
    if value == "" or Path(value).parts[:1] == (BASES.name,):
        return value == "" or Path(value).is_dir()
    return not Path(value).exists() and bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value))


def is_accelerate_config(value):
    try:
        config = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
    except (OSError, TypeError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and {"distributed_type", "num_processes", "num_machines"} <= set(config)

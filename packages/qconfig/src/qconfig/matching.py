"""Which quantizers an entry's pattern selects (docs/model-optimizer-rules.md, 'Matching'), without an
O(entries * quantizers) fnmatch loop.

Model Optimizer tests every module name against every pattern with ``fnmatch``. MoE models repeat
the same structure thousands of times with only layer/expert numbers changing, so we group names
by their *shape* (every run of digits replaced by ``0``) and test a pattern once per group.
That is exact for patterns that cannot tell digits apart — no digit, no ``?`` and no character
class that could contain a digit: each digit run of a name then lies inside text matched by
``*``, so changing its value or length cannot change the verdict. The remaining patterns are
tested name by name with a compiled regex.

Matching is case-sensitive on every platform. (Model Optimizer uses ``fnmatch.fnmatch``, which
follows ``os.path.normcase`` and is case-insensitive on Windows; configs behave the same
everywhere here.)
"""

import re
from fnmatch import translate
from functools import lru_cache

__all__ = [
    "digit_blind",
    "matches",
    "matches_fast",
    "may_normalize",
    "normalize_quantizer_name",
    "pattern_regex",
    "shape_of",
]

_LIST_SUFFIX = re.compile(r"(weight_quantizers?|input_quantizers?)\.\d+(?=$|\.)")
_DIGITS = re.compile(r"\d+")


def normalize_quantizer_name(name: str) -> str:
    """``a.gate_up_proj_weight_quantizers.0`` → ``a.gate_up_proj_weight_quantizer`` ('Matching').

    Lets ``*weight_quantizer`` select fused-expert list members and sequential children.
    """
    return _LIST_SUFFIX.sub(lambda m: m.group(1).removesuffix("s"), name)


@lru_cache(maxsize=4096)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """fnmatch semantics (whole string, ``*`` crosses dots), case-sensitive."""
    return re.compile(translate(pattern))


def may_normalize(name: str) -> bool:
    """Cheap test: can ``normalize_quantizer_name`` change this name at all?"""
    return "quantizers." in name or "quantizer." in name


def matches(pattern: str, name: str) -> bool:
    """Model Optimizer's name test: the name itself or its normalized form matches."""
    regex = pattern_regex(pattern)
    if regex.match(name):
        return True
    if not may_normalize(name):
        return False
    normalized = normalize_quantizer_name(name)
    return normalized != name and regex.match(normalized) is not None


_WILDCARDS = re.compile(r"\*|\?|\[[^\]]*\]")


@lru_cache(maxsize=4096)
def required_text(pattern: str) -> str:
    """The longest literal run of ``pattern``: a name without it cannot match it directly.

    Patterns with a ``[`` get no pre-check: fnmatch's rules for ``]`` and unclosed classes are
    subtle, and such patterns are rare outside digit-blind ones.
    """
    if "[" in pattern:
        return ""
    return max(_WILDCARDS.split(pattern), key=len)


def matches_fast(pattern: str, name: str) -> bool:
    """``matches`` with a substring pre-check (exact: the literal must occur in a direct match,
    and names that normalization could change take the full path)."""
    if required_text(pattern) not in name and not may_normalize(name):
        return False
    return matches(pattern, name)


def shape_of(name: str) -> str:
    """A name with every digit run replaced by ``0``: the grouping key for digit-blind patterns."""
    return _DIGITS.sub("0", name)


_CLASS = re.compile(r"\[(!?)([^\]]*)\]")


@lru_cache(maxsize=4096)
def digit_blind(pattern: str) -> bool:
    """True if the pattern's verdict cannot depend on which digits a name contains."""
    if "?" in pattern or any(c.isdigit() for c in pattern):
        return False
    for negated, body in _CLASS.findall(pattern):
        if negated or "-" in body:
            return False
    return True

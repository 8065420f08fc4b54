"""Strategies over raw YAML and JSON text: hostile tokens planted in real configs.

A document is built as a tree (dicts, lists, scalars and the markers below), mutated, then
written out as YAML (block or flow style) or JSON, then optionally damaged as text (unicode
planted at random places, truncation, BOMs, CRLF). The markers carry what a Python value cannot:
verbatim tokens (:class:`Raw`: tags, huge numbers, YAML 1.1 spellings), anchors and aliases,
explicit tags, duplicate keys. Why trees and not random characters: random characters stop at
the parser; a real config with one hostile node goes through validation, compilation and lint.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from fuzz_corpus import config_texts, config_trees
from hypothesis import strategies as st

# -- markers --------------------------------------------------------------------------------


class Raw:
    """A verbatim token: ``yaml`` in YAML documents, ``json`` (default: a JSON string of the
    YAML text) in JSON ones."""

    __slots__ = ("json", "yaml")

    def __init__(self, yaml: str, json_text: str | None = None) -> None:
        self.yaml = yaml
        self.json = json_text if json_text is not None else json.dumps(yaml)

    def __repr__(self) -> str:
        return f"Raw({self.yaml!r})"


class Anchor:
    """``&name value``: defines an alias target (JSON: the value)."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: Any) -> None:
        self.name, self.value = name, value

    def __repr__(self) -> str:
        return f"Anchor({self.name!r}, {self.value!r})"


class Alias:
    """``*name`` (JSON: null)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Alias({self.name!r})"


class Tagged:
    """``!tag value`` (JSON: the value)."""

    __slots__ = ("tag", "value")

    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value

    def __repr__(self) -> str:
        return f"Tagged({self.tag!r}, {self.value!r})"


class Deep:
    """``value`` inside ``depth`` lists (``kind="list"``) or single-key mappings, written
    without recursion (neither this module nor ``copy.deepcopy`` can recurse 2,000 deep)."""

    __slots__ = ("depth", "kind", "value")

    def __init__(self, depth: int, kind: str, value: Any) -> None:
        self.depth, self.kind, self.value = depth, kind, value

    def build(self) -> Any:
        """The nested Python value (for mappings handed to the loader)."""
        return nested(self.depth, self.kind, materialize(self.value))

    def __repr__(self) -> str:
        return f"Deep({self.depth}, {self.kind!r}, {self.value!r})"


def materialize(node: Any) -> Any:
    """A drawn tree as plain Python data: Deep markers built, other markers as in JSON."""
    if isinstance(node, Deep):
        return node.build()
    if isinstance(node, (Anchor, Tagged)):
        return materialize(node.value)
    if isinstance(node, Alias):
        return None
    if isinstance(node, Raw):
        return node.yaml
    if isinstance(node, dict):
        return {materialize(k): materialize(v) for k, v in node.items()}
    if isinstance(node, list):
        return [materialize(v) for v in node]
    if isinstance(node, DupKey):
        return materialize(node.key)
    return node


class DupKey:
    """A mapping key written like ``key`` (so the document has a duplicate key)."""

    __slots__ = ("key", "n")

    def __init__(self, key: Any, n: int) -> None:
        self.key, self.n = key, n

    def __hash__(self) -> int:
        return hash(("dup", self.n))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DupKey) and other.n == self.n

    def __repr__(self) -> str:
        return f"DupKey({self.key!r})"


# -- writing --------------------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z_*$][A-Za-z0-9_.*\-/\[\]]*")
_YAML11_WORDS = {
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
}  # fmt: skip


def yaml_float(value: float) -> str:
    """A float as YAML 1.1 reads it back as a float (PyYAML needs a dot and a signed exponent)."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:
        text = text.replace("e", ".0e")
    return text


def yaml_scalar(value: Any, *, plain: bool = True) -> str:
    if isinstance(value, Raw):
        return value.yaml
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return yaml_float(value)
    text = str(value)
    if plain and _PLAIN.fullmatch(text) and text.lower() not in _YAML11_WORDS:
        if not text.startswith("*") and "[" not in text:
            return text
    return json.dumps(text, ensure_ascii=False)


def yaml_flow(node: Any) -> str:
    """``node`` on one line (flow style)."""
    if isinstance(node, Deep):
        head, tail = ("[", "]") if node.kind == "list" else ("{a: ", "}")
        return head * node.depth + yaml_flow(node.value) + tail * node.depth
    if isinstance(node, Anchor):
        return f"&{node.name} {yaml_flow(node.value)}"
    if isinstance(node, Alias):
        return f"*{node.name}"
    if isinstance(node, Tagged):
        return f"{node.tag} {yaml_flow(node.value)}"
    if isinstance(node, dict):
        return "{" + ", ".join(f"{yaml_key(k)}: {yaml_flow(v)}" for k, v in node.items()) + "}"
    if isinstance(node, (list, tuple)):
        return "[" + ", ".join(yaml_flow(v) for v in node) + "]"
    return yaml_scalar(node)


def yaml_key(key: Any) -> str:
    if isinstance(key, DupKey):
        return yaml_key(key.key)
    if isinstance(key, (dict, list, tuple, Anchor, Alias, Tagged, Deep)):
        text = yaml_flow(key)
        return f"? {text}\n  " if isinstance(key, Alias) else text
    return yaml_scalar(key)


def _is_block(node: Any) -> bool:
    return isinstance(node, (dict, list)) and len(node) > 0


def yaml_block(node: Any, indent: int = 0) -> list[str]:
    """``node`` as block-style lines; nested markers and empty containers go in flow style."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            head = f"{pad}{yaml_key(key)}:"
            if _is_block(value):
                lines.append(head)
                lines += yaml_block(value, indent + 2)
            else:
                lines.append(f"{head} {yaml_flow(value)}")
        return lines
    for item in node:
        if isinstance(item, dict) and item:
            inner = yaml_block(item, indent + 2)
            lines.append(f"{pad}- {inner[0][indent + 2 :]}")
            lines += inner[1:]
        elif _is_block(item):
            lines.append(f"{pad}- {yaml_flow(item)}")
        else:
            lines.append(f"{pad}- {yaml_flow(item)}")
    return lines


def to_yaml(node: Any, *, block: bool = True) -> str:
    if block and _is_block(node):
        return "\n".join(yaml_block(node)) + "\n"
    return yaml_flow(node) + "\n"


def to_json(node: Any, indent: int | None = None) -> str:
    """JSON text; markers become their JSON stand-ins, non-string keys are stringified."""
    if isinstance(node, Raw):
        return node.json
    if isinstance(node, (Anchor, Tagged)):
        return to_json(node.value, indent)
    if isinstance(node, Alias):
        return "null"
    if isinstance(node, Deep):
        head, tail = ("[", "]") if node.kind == "list" else ('{"a": ', "}")
        return head * node.depth + to_json(node.value, indent) + tail * node.depth
    sep = "\n" + " " * (indent or 0) if indent else ""
    if isinstance(node, dict):
        items = [f"{json_key(k)}: {to_json(v, indent)}" for k, v in node.items()]
        return "{" + sep + ("," + sep).join(items) + "}"
    if isinstance(node, (list, tuple)):
        return "[" + ("," + sep).join(to_json(v, indent) for v in node) + "]"
    if isinstance(node, float) and not math.isfinite(node):
        return "NaN" if math.isnan(node) else ("Infinity" if node > 0 else "-Infinity")
    return json.dumps(node, ensure_ascii=False)


def json_key(key: Any) -> str:
    if isinstance(key, DupKey):
        return json_key(key.key)
    if isinstance(key, Raw):
        return key.json if key.json.startswith('"') else json.dumps(key.yaml)
    if isinstance(key, str):
        return json.dumps(key, ensure_ascii=False)
    if isinstance(key, (Anchor, Tagged)):
        return json_key(key.value)
    if isinstance(key, bool) or key is None:
        return json.dumps(json.dumps(key))
    return json.dumps(yaml_flow(key) if not isinstance(key, (int, float)) else str(key))


# -- hostile tokens -------------------------------------------------------------------------

BIG = "9" * 4301  # one digit beyond CPython's int-string limit

#: Explicit tags with good and bad values, unknown and Python tags.
TAGGED_SCALARS = [
    "!!int abc", "!!int 0x", "!!int 12", "!!int " + BIG, "!!bool maybe", "!!bool yes",
    "!!timestamp 2001-99-99", "!!timestamp 2001-12-14", "!!timestamp x", "!!float abc",
    "!!float 1e999", "!!float .nan", "!!null x", "!!str 8", "!!binary aGVsbG8=",
    "!!binary ###", "!!set {a, b}", "!!omap [a: 1]", "!!pairs [a: 1, a: 2]", "!!map [1]",
    "!!seq {a: 1}", "!!python/object:os.system {}", "!!python/name:os.system ''",
    "!!python/object/apply:os.system [echo]", "!!python/tuple [4, 3]",
    "!unknown x", "!local [1]", "!<tag:yaml.org,2002:int> 12",
    "!<tag:yaml.org,2002:int> x", "!!merge <<", "!!value =",
]  # fmt: skip

#: Plain scalars with surprising readings (YAML 1.1 booleans, sexagesimal, octal, huge...).
PLAIN_SCALARS = [
    "yes", "no", "on", "off", "y", "n", "~", "Null", "NULL", "1:20", "0o17", "017", "0x1F",
    "0b101", "1_000", "+12", ".5", "1e3", "1.0e+3", "1e999", "-1e999", ".inf", "-.Inf",
    ".nan", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "=", "<<", BIG, "-" + BIG,
    "1" + "0" * 5000, "0." + "1" * 5000, "4,3", "(4, 3)", "e4m3", "E4M3", "e2m1", "fp8",
    "nvfp4", "int8", "-1", "0", "-0", "1.5", "0.0", "-0.0", "''", '""', "' '", "'\t'",
]  # fmt: skip

#: JSON-only tokens: what Python's json accepts beyond RFC 8259, and huge values.
JSON_TOKENS = [
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-400", BIG, "-" + BIG,
    "1" + "0" * 5000, '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', "0.1e1", "-0",
    "123456789012345678901234567890",
]  # fmt: skip

#: Characters that break naive text handling.
UNICODE = [
    "\x00", "\ud800", "\udfff", "\u202e", "\u200f", "\u200b", "\ufeff", "\x85", "\u2028",
    "\u2029", "\t", "\r", "\r\n", "\x1b", "\x7f", "\x0b", "\x0c", "\U0001f600", "\ufffe",
    "\uffff", "e\u0301", "\uff11\uff12", "\u0668", "\u0130", "\u00df", "\uFDD0", "\U000E0001",
    "\u0000\u0000", "\u202a\u202b\u202c", "\u05d0\u05d1", "\ufe0f", "\\", "'", '"', "#", ": ",
    "- ", "&a ", "*a ", "!", "%", "@", "`", "|", ">", "{", "}", "[", "]", ",",
]  # fmt: skip

unicode_strings = st.one_of(
    st.sampled_from(UNICODE),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=6),
    st.text(max_size=12),
)

hostile_scalars = st.one_of(
    st.sampled_from(TAGGED_SCALARS).map(Raw),
    st.sampled_from(PLAIN_SCALARS).map(Raw),
    st.sampled_from(JSON_TOKENS).map(lambda t: Raw(t, t)),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    unicode_strings,
)

#: Mapping keys of every type: null, numbers, booleans, collections, unicode, empty, tags.
KEY_TOKENS = [
    "~", "null", "''", "1", "-1", "0", "1.5", ".nan", ".inf", "true", "false", "yes", "on",
    "[a, b]", "{a: 1}", "[]", "{}", "!!int 5", "!!int abc", "!!binary aGk=", "2001-12-14",
    '"\\0"', '"\\ud800"', "<<", "=", BIG, "-" + BIG, '"-1"', "'-1'", '"type"', "? [x]\n ",
    "!!python/tuple [1, 2]", "1:20", "0x10",
]  # fmt: skip

hostile_keys = st.one_of(
    st.sampled_from(KEY_TOKENS).map(Raw),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    unicode_strings,
    st.sampled_from(["", " ", "quant_cfg", "algorithm", "enable", "cfg", "num_bits", "type"]),
    st.lists(st.integers(-2, 2), min_size=1, max_size=3).map(tuple),
)

#: Field names of the config language, so planted keys hit real fields too.
FIELD_NAMES = [
    "quant_cfg", "algorithm", "quantizer_name", "parent_class", "cfg", "enable", "num_bits",
    "axis", "block_sizes", "type", "scale_bits", "bias", "calibrator", "rotate", "fake_quant",
    "unsigned", "narrow_range", "learn_amax", "trt_high_precision_dtype", "backend",
    "backend_extra_args", "use_constant_amax", "constant_amax", "effective_bits",
    "pass_through_bwd", "method", "imports", "$import", "metadata", "quantize", "default",
    "nn.Linear", "*weight_quantizer", "*input_quantizer", "-1", "-2", "1", "0",
]  # fmt: skip


def nested(depth: int, kind: str, leaf: Any = 1) -> Any:
    """``depth`` levels of lists or single-key mappings around ``leaf``, built iteratively."""
    node = leaf
    for _ in range(depth):
        node = [node] if kind == "list" else {"a": node}
    return node


DEPTHS = [2, 50, 200, 499, 500, 999, 1000, 1500, 2000]


@st.composite
def deep_values(draw: st.DrawFn) -> Any:
    """Nesting up to ~2,000 levels (the parser, the walk and every validator recurse)."""
    depth = draw(st.sampled_from(DEPTHS))
    kind = draw(st.sampled_from(["list", "dict"]))
    return Deep(depth, kind, draw(st.sampled_from([1, None, "x", {"num_bits": 8}])))


def laughs(width: int, depth: int, prefix: str = "lol") -> dict[str, Any]:
    """Billion laughs: ``width ** depth`` strings from ``depth`` anchored lists."""
    out: dict[str, Any] = {f"{prefix}0": Anchor(f"{prefix}0", ["lol"] * width)}
    for i in range(1, depth + 1):
        out[f"{prefix}{i}"] = Anchor(f"{prefix}{i}", [Alias(f"{prefix}{i - 1}")] * width)
    return out


# -- mutating a tree ------------------------------------------------------------------------


def _paths(tree: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value below ``tree``, in document order (iterative)."""
    out: list[tuple[Any, Any]] = []
    stack: list[Any] = [tree]
    seen = 0
    while stack and seen < 20000:
        node = stack.pop()
        seen += 1
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        children = []
        for key, value in items:
            out.append((node, key))
            if isinstance(value, (dict, list)):
                children.append(value)
        stack.extend(reversed(children))
    return out


@st.composite
def near_valid_values(draw: st.DrawFn) -> Any:
    """Values of the config language, valid and a step off (bits, axes, blocks, amax, ...)."""
    from fuzz_structures import attribute_values

    return draw(attribute_values)


def replacement_values() -> st.SearchStrategy:
    return st.one_of(
        hostile_scalars,
        near_valid_values(),
        deep_values(),
        st.lists(hostile_scalars, max_size=3),
        st.dictionaries(hostile_keys, hostile_scalars, max_size=3),
    )


MUTATIONS = [
    "replace", "near-valid", "delete", "add-key", "add-field", "deep", "alias", "tag",
    "dup-key", "swap", "merge", "laughs",
]  # fmt: skip


@st.composite
def mutate(draw: st.DrawFn, tree: Any) -> Any:
    """One mutation of ``tree`` (a deep copy) at a drawn place."""
    tree = copy.deepcopy(tree)
    paths = _paths(tree) if isinstance(tree, (dict, list)) else []
    if not paths:
        return draw(replacement_values())
    from fuzz_structures import pick

    op = draw(st.sampled_from(MUTATIONS))
    i = pick(draw, len(paths))
    parent, key = paths[i]
    value = parent[key]
    if op == "replace":
        parent[key] = draw(replacement_values())
    elif op == "near-valid":
        parent[key] = draw(near_valid_values())
    elif op == "delete":
        del parent[key]
    elif op in ("add-key", "add-field") and isinstance(value, dict):
        new = draw(hostile_keys if op == "add-key" else st.sampled_from(FIELD_NAMES))
        value[new] = draw(replacement_values())
    elif op == "deep":
        kind = draw(st.sampled_from(["list", "dict"]))
        parent[key] = Deep(draw(st.sampled_from(DEPTHS)), kind, value)
    elif op == "alias":
        _plant_alias(draw, paths, i)
    elif op == "tag":
        tag = draw(
            st.sampled_from(
                [
                    "!!map",
                    "!!seq",
                    "!!str",
                    "!!int",
                    "!!set",
                    "!!omap",
                    "!x",
                    "!!python/tuple",
                    "!!float",
                    "!!bool",
                    "!!null",
                ]
            )
        )
        parent[key] = Tagged(tag, value)
    elif op == "dup-key" and isinstance(parent, dict):
        parent[DupKey(key, draw(st.integers(0, 10**6)))] = draw(replacement_values())
    elif op == "swap":
        other_parent, other_key = paths[draw(st.integers(0, len(paths) - 1))]
        parent[key] = copy.deepcopy(other_parent[other_key])
    elif op == "merge" and isinstance(value, dict):
        value["<<"] = draw(
            st.sampled_from(
                [Alias("m"), [Alias("m"), Alias("m")], Raw("*nope"), 5, {"num_bits": 4}]
            )
        )
        if isinstance(tree, dict):
            tree_items = list(tree.items())
            tree.clear()
            tree["_merge_source"] = Anchor("m", {"num_bits": 4, "axis": 0})
            tree.update(tree_items)
    elif op == "laughs" and isinstance(tree, dict):
        bomb = laughs(draw(st.integers(2, 10)), draw(st.integers(1, 9)))
        last = list(bomb)[-1]
        parent[key] = Alias(last)
        tree_items = list(tree.items())
        tree.clear()
        tree.update(bomb)
        tree.update(tree_items)
    else:
        parent[key] = draw(hostile_scalars)
    return tree


def _plant_alias(draw: st.DrawFn, paths: list[tuple[Any, Any]], i: int) -> None:
    """Anchor the value at ``paths[i]`` and alias it from a later place (or from itself: a
    recursive alias)."""
    parent, key = paths[i]
    parent[key] = Anchor("x", parent[key])
    later = [p for p in paths[i + 1 :] if p[0] is not parent or p[1] != key]
    recursive = draw(st.integers(0, 9)) == 0
    if recursive and isinstance(parent[key].value, (dict, list)) and len(parent[key].value):
        inner = parent[key].value
        inner[next(iter(inner)) if isinstance(inner, dict) else 0] = Alias("x")
        return
    if later:
        other_parent, other_key = later[draw(st.integers(0, len(later) - 1))]
        try:
            other_parent[other_key] = Alias("x")
        except (KeyError, IndexError):  # removed by the assignment above
            pass


@st.composite
def mutated_trees(draw: st.DrawFn, max_mutations: int = 3) -> Any:
    """A real config with up to ``max_mutations`` hostile changes."""
    from fuzz_structures import config_dicts

    base = draw(st.one_of(st.sampled_from(config_trees()), config_dicts()))
    if not draw(st.integers(0, 9)):  # the recipe form: metadata + quantize
        base = {"metadata": {"recipe_type": "ptq", "description": "fuzz"}, "quantize": base}
    for _ in range(draw(st.integers(0, max_mutations))):
        base = draw(mutate(base))
    return base


# -- text -----------------------------------------------------------------------------------


@st.composite
def damage_text(draw: st.DrawFn, text: str) -> str:
    """Up to two text-level changes: unicode planted, truncation, BOM, CRLF, a line lost or
    doubled, a second document, a schema comment, tabs."""
    for _ in range(draw(st.integers(0, 2))):
        op = draw(
            st.sampled_from(["insert", "truncate", "bom", "crlf", "line", "doc", "schema", "tab"])
        )
        at = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:at] + draw(unicode_strings) + text[at:]
        elif op == "truncate":
            text = text[:at]
        elif op == "bom":
            text = "\ufeff" + text
        elif op == "crlf":
            text = text.replace("\n", "\r\n")
        elif op == "line":
            lines = text.split("\n")
            n = draw(st.integers(0, max(0, len(lines) - 1)))
            lines.insert(n, lines[n]) if draw(st.booleans()) else lines.pop(n)
            text = "\n".join(lines)
        elif op == "doc":
            text = text + "\n---\n" + text[at:]
        elif op == "schema":
            schema = draw(
                st.sampled_from(
                    [
                        "qconfig.QuantizeConfig",
                        "qconfig.QuantizerCfgListConfig",
                        "QuantizerCfgListConfig",
                        "modelopt.torch.quantization.config.QuantizerCfgEntry",
                        "qconfig.QuantizerAttributeConfig",
                        "nope",
                        "",
                        "../../no/such/schema",
                    ]
                )
            )
            text = f"# modelopt-schema: {schema}\n" + text
        elif op == "tab":
            text = text.replace("  ", "\t", 1)
    return text


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, str]:
    """``(suffix, text)``: a mutated config written as YAML or JSON, maybe damaged, or a real
    config file verbatim and damaged. ``suffix`` is how a file of it would be named."""
    kind = draw(st.sampled_from(["yaml-block", "yaml-flow", "json", "json-indent", "verbatim"]))
    if kind == "verbatim":
        suffix, text = draw(st.sampled_from(config_texts()))
    else:
        tree = draw(mutated_trees())
        if kind.startswith("yaml"):
            suffix, text = ".yaml", to_yaml(tree, block=kind == "yaml-block")
        else:
            suffix, text = ".json", to_json(tree, 1 if kind == "json-indent" else None)
    return suffix, draw(damage_text(text))


@st.composite
def bomb_documents(draw: st.DrawFn) -> str:
    """Documents whose naive expansion is huge: billion laughs (in a real config or alone),
    a long string referenced many times, merge-key chains, recursive aliases."""
    kind = draw(
        st.sampled_from(["laughs", "laughs-in-config", "quadratic", "merge", "recursive", "keys"])
    )
    width, depth = draw(st.integers(5, 12)), draw(st.integers(6, 12))
    if kind == "laughs":
        return to_yaml(laughs(width, depth))
    if kind == "laughs-in-config":
        tree = {**laughs(width, depth), **draw(st.sampled_from(config_trees()))}
        tree["quant_cfg"] = [{"quantizer_name": "*", "cfg": Alias(f"lol{depth}")}]
        return to_yaml(tree)
    if kind == "quadratic":
        big = "x" * draw(st.integers(10_000, 200_000))
        refs = draw(st.integers(1_000, 20_000))
        return f"a: &a {big}\nquant_cfg: [" + ", ".join(["*a"] * refs) + "]\n"
    if kind == "merge":
        lines = ["m0: &m0 {a0: 1, b0: 2}"]
        for i in range(1, depth + 2):
            lines.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: {i}}}")
        return "\n".join(lines) + "\n"
    if kind == "recursive":
        return draw(
            st.sampled_from(
                [
                    "a: &a [*a]\n",
                    "a: &a {b: *a}\n",
                    "&a [*a, *a]\n",
                    "quant_cfg: &q [{quantizer_name: '*', cfg: *q}]\n",
                ]
            )
        )
    bomb = laughs(width, depth)
    return to_yaml(bomb) + f"? *lol{depth}\n: 1\n"

"""Strategies over structures: configs as Python data, and mutations of JSON documents.

Configs are drawn field by field from values that are valid, a step off (``num_bits: 1``, a
block size of 0, an axis the layer does not have, an infinite ``constant_amax``) or of the wrong
type, in every form Model Optimizer 0.47.0 accepts: ``quant_cfg`` entry lists, legacy flat
dicts, single-key entries, ``nn.*``-scoped entries, algorithm names, configs and lists of them.
Manifests and plans are real documents with JSON-level mutations (a node of another JSON type,
a key deleted or added, a list element duplicated).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

INF = float("inf")
NAN = float("nan")


def mix(*options: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """``one_of`` with integer weights (a strategy listed ``w`` times)."""
    out: list[st.SearchStrategy] = []
    for weight, strategy in options:
        out += [strategy] * weight
    return st.one_of(out)


def values(valid: list[Any], invalid: list[Any]) -> st.SearchStrategy:
    """Valid values three times as often as invalid ones."""
    return mix((3, st.sampled_from(valid)), (1, st.sampled_from(invalid)))


num_bits = values(
    [8, 4, 16, 2, (4, 3), (5, 2), (2, 1), (3, 2), (8, 0), (1, 0), "e4m3", "e2m1", "e5m2", [4, 3]],
    [0, 1, -1, 3, 10**30, 2**64, (0, 0), (4, 3, 2), (-1, 3), "E4M3", "fp8", "e9m9", "", None,
     1.5, True, [4], {"e": 4}, NAN, INF, (2**40, 3), "e4m3 ", 65],
)  # fmt: skip
axes = values(
    [None, 0, -1, 1, (0,), (0, 1), (-1,), [0]],
    [5, -5, 10**30, (0, 0), (), [], "0", 1.5, True, (0, None), {"a": 1}, -(2**63)],
)
block_size = values([16, 32, 128, 8], [0, -16, 10**30, 1.5, "16", None, True, 2**63, 3])
block_key = values([-1, -2, 0, 1], [99, -99, 10**20, "-1", "x", 1.5, None, "scale_bits"])
block_sizes = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            -1: block_size,
            -2: block_size,
            "type": values(["static", "dynamic"], ["dynmic", "", None, 5, "STATIC"]),
            "scale_bits": values([(4, 3), (8, 0), 8], [(0, 0), (4, 3, 1), "e8m0", -1, 10**30]),
            "scale_block_sizes": st.sampled_from([{-1: 16}, {}, {-1: 0}, 5]),
        },
    ),
    st.dictionaries(block_key, block_size, max_size=3),
)
bias = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            -1: values([True, (0,)], [5, "x", None]),
            "type": values(["static", "dynamic"], ["bogus", 5]),
            "method": values(["mean", "max_min"], ["median", None]),
        },
    ),
)
constant_amax = values([1.0, 448.0, 6.0, 0.5], [0.0, -1.0, INF, -INF, NAN, 1e39, 3.5e38, "1", True])
rotate = values(
    [False, True, {"enable": True}, {"enable": True, "mode": "rotate_back", "block_size": 16}],
    [{"enable": True, "block_size": 0}, {"enable": True, "block_size": -4}, {"mode": "x"}, 5],
)
calibrator = values(["max", "histogram", "mse"], ["nope", "", 5, ("max",), ["max", {}], None])
flags = values([True, False], ["yes", 1, 0, None, "true", 2])
precision = values(["Float", "Half", "BFloat16"], ["float", "", None, 5])

ATTRIBUTES = {
    "num_bits": num_bits,
    "axis": axes,
    "block_sizes": block_sizes,
    "enable": flags,
    "type": values(["static", "dynamic"], ["dynmic", "", 5]),
    "fake_quant": flags,
    "unsigned": flags,
    "narrow_range": flags,
    "learn_amax": flags,
    "bias": bias,
    "trt_high_precision_dtype": precision,
    "calibrator": calibrator,
    "rotate": rotate,
    "pass_through_bwd": flags,
    "backend": values([None], ["triton", "", 5]),
    "backend_extra_args": values([None, {}], [{"x": 1}, 5, []]),
    "use_constant_amax": flags,
    "constant_amax": constant_amax,
    "effective_bits": values([None, 4.5, 8.0], [0, -1, INF, NAN, "x"]),
}

attribute_dicts = st.fixed_dictionaries({}, optional=ATTRIBUTES)
attribute_values = st.one_of(*ATTRIBUTES.values(), attribute_dicts)

names = values(
    ["*", "*weight_quantizer", "*input_quantizer", "*output_quantizer", "*lm_head*",
     "*mlp*", "*self_attn.q_proj*", "*[kv]_bmm_quantizer", "stem.weight_quantizer",
     "model.layers.0.mlp.down_proj.weight_quantizer", "*weight_quantizer.0", "default"],
    ["", "[", "**", "*[", "\x00", "a" * 5000, 5, None, ["*"], "*\u202e*", "nn.Linear"],
)  # fmt: skip
parent_classes = values(
    ["nn.Linear", "nn.Conv2d", "nn.Embedding", "nn.BatchNorm2d", "nn.LSTM"],
    ["nn.Foo", "Linear", "", 5, None, ["nn.Linear"], "nn.linear"],
)
cfgs = st.one_of(
    attribute_dicts,
    st.lists(attribute_dicts, min_size=0, max_size=3),
    st.sampled_from([None, 5, "x", [], {}, [None], {"enable": True}]),
)

new_entries = st.fixed_dictionaries(
    {"quantizer_name": names},
    optional={"parent_class": parent_classes, "cfg": cfgs, "enable": flags},
)
legacy_entries = st.one_of(
    st.dictionaries(names.filter(lambda n: isinstance(n, str)), cfgs, min_size=1, max_size=1),
    st.builds(lambda pc, inner: {pc: inner}, parent_classes.filter(lambda p: isinstance(p, str)),
              st.dictionaries(names.filter(lambda n: isinstance(n, str)), cfgs, max_size=2)),
)  # fmt: skip
entries = mix(
    (6, new_entries),
    (2, legacy_entries),
    (1, st.builds(lambda e, k, v: {**e, k: v}, new_entries, st.sampled_from(["bogus", 1, None]), st.just(1))),
    (1, st.sampled_from([None, 5, "x", [], {}, {"quantizer_name": "*", "$import": "x"}])),
)  # fmt: skip
legacy_keys = st.one_of(  # keys of any hashable type: Python mappings can have them
    names.filter(lambda n: not isinstance(n, list)),
    st.sampled_from(["default", "nn.Linear", 1, None, 1.5, True, -1, (0, 1)]),
)
legacy_dicts = st.dictionaries(
    legacy_keys,
    st.one_of(cfgs, st.dictionaries(names.filter(lambda n: isinstance(n, str)), cfgs, max_size=2)),
    max_size=5,
)
quant_cfgs = mix(
    (6, st.lists(entries, max_size=6)),
    (2, legacy_dicts),
    (1, st.sampled_from([None, 5, "x", [[]], {1: 8}])),
)

methods = [
    "max", "awq_lite", "awq_clip", "awq_full", "smoothquant", "mse", "gptq", "svdquant",
    "local_hessian", "nvfp4_act_headroom", "lsq", None,
]  # fmt: skip
algorithm_configs = st.builds(
    lambda method, extra: {"method": method, **extra},
    st.sampled_from([*methods, "nope", "", 5]),
    st.fixed_dictionaries(
        {},
        optional={
            "alpha_step": values([0.1, 0.5, 1.0], [0, -0.1, 2.0, NAN, INF, "x"]),
            "alpha": values([0.5, 1.0], [-1.0, NAN, 2.0]),
            "distributed_sync": values([True, False], ["x", None]),
            "moe_calib_experts_ratio": values([0.5, 1.0], [0.0, -1.0, 2.0, NAN]),
            "bogus": st.just(1),
        },
    ),
)
algorithms = mix(
    (3, st.sampled_from(methods)),
    (3, algorithm_configs),
    (1, st.lists(st.one_of(st.sampled_from(methods), algorithm_configs), max_size=3)),
    (1, st.sampled_from(["nope", 5, {}, [], [[]], "Max", "max ", {"method": "max", "x": {}}])),
)


@st.composite
def config_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A QuantizeConfig as a mapping: valid, near-valid or of the wrong shape."""
    out: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        out["quant_cfg"] = draw(quant_cfgs)
    if draw(st.integers(0, 2)):
        out["algorithm"] = draw(algorithms)
    if not draw(st.integers(0, 15)):
        out[draw(st.sampled_from(["effective_bits", "bogus", "metadata", "quantize"]))] = 1
    return out


# -- JSON documents (manifests, plans) -------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 10**30, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["", "x", "nn.Linear", "float32", "qconfig.plan/v1", "qconfig.manifest/v1"]),
)
json_values = st.one_of(
    json_scalars,
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=6), json_scalars, max_size=3),
)


def pick(draw: st.DrawFn, n: int) -> int:
    """An index below ``n``, spread over the document: Hypothesis favours 0 and the bounds
    (the first and last keys, ``format`` and the last quantizer), so the drawn number is
    scattered by a multiplicative hash; it still shrinks towards one fixed place."""
    return (draw(st.integers(0, 2**20)) * 40503 + 12345) % n


def _json_paths(tree: Any) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            out.append((node, key))
            if isinstance(value, (dict, list)):
                stack.append(value)
    return out


#: Mutations of a JSON document, weighted: values of the document's own language most often.
JSON_MUTATIONS = ["domain"] * 4 + ["replace", "replace", "delete", "add", "duplicate", "deep"]


@st.composite
def mutated_json(
    draw: st.DrawFn, tree: Any, domain: dict[Any, st.SearchStrategy], keys: list[str]
) -> Any:
    """``tree`` (deep-copied) with 1-3 JSON-level mutations; ``domain`` maps a key to values
    of the document's own language for it (``None``: any other key), ``keys`` lists its field
    names (so added keys are sometimes known ones)."""
    tree = copy.deepcopy(tree)

    def fresh(strategy: st.SearchStrategy) -> Any:
        # sampled_from hands out the same object every time: never edit it in place
        return copy.deepcopy(draw(strategy))

    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        paths = _json_paths(tree)
        if not paths:
            return draw(json_values)
        parent, key = paths[pick(draw, len(paths))]
        op = draw(st.sampled_from(JSON_MUTATIONS))
        value = parent[key]
        if op == "replace":
            parent[key] = fresh(json_values)
        elif op == "domain":
            parent[key] = fresh(domain.get(key, domain[None]))
        elif op == "delete":
            del parent[key]
        elif op == "add" and isinstance(value, dict):
            new = draw(st.one_of(st.sampled_from(keys), st.text(max_size=5)))
            value[new] = fresh(st.one_of(json_values, domain.get(new, domain[None])))
        elif op == "duplicate" and isinstance(value, list) and value:
            index = draw(st.integers(0, len(value) - 1))
            value.insert(draw(st.integers(0, len(value))), copy.deepcopy(value[index]))
        elif op == "deep":
            from fuzz_text import Deep

            depth = draw(st.sampled_from([10, 500, 1000, 2000]))
            parent[key] = Deep(depth, draw(st.sampled_from(["list", "dict"])), value)
        else:
            parent[key] = draw(json_scalars)
    return tree


_SHAPES = [[0], [-1], [], [16, 0], [10**30], [16.5, 16], [16, 16, 16, 16], [2**63, 1], None, 16]
_NAMES = ["", ".", "a.b", "weight_quantizer", "input_quantizer", "weight_quantizer.0",
          "layers.0", "stem", "nn.Linear", "nn.Foo", "\x00", "*", 5, None]  # fmt: skip
manifest_domain = {
    **ATTRIBUTES,  # the attribute fields of "defaults"
    None: st.sampled_from([*_SHAPES, *_NAMES, True, {"num_bits": 1}, "float64"]),
    "defaults": st.one_of(attribute_dicts, st.sampled_from([{"num_bits": 1}, {"block_sizes": {"-1": 0}}, {"axis": 7}])),
    "weight_shape": st.sampled_from(_SHAPES),
    "weight_dtype": st.sampled_from(["float32", "int8", "float64", "bfloat16", "", "nope", 5, None]),
    "name": st.sampled_from(_NAMES),
    "attribute": st.sampled_from(_NAMES),
    "registry_key": st.sampled_from(["nn.Linear", "nn.Conv2d", "nn.Foo", "", None]),
    "hard_disabled": st.sampled_from([True, False, 1, "yes", None]),
    **dict.fromkeys(["parent_class_keys", "subclass_of", "registry_keys"], st.lists(st.sampled_from(["nn.Linear", "nn.Conv2d", "nn.Foo", "", "nn.Linear"]), max_size=3)),
}  # fmt: skip
MANIFEST_KEYS = [
    "format", "model", "registry_keys", "modules", "name", "class_name", "registry_key",
    "parent_class_keys", "weight_shape", "weight_dtype", "subclass_of", "quantizers",
    "attribute", "defaults", "hard_disabled",
]  # fmt: skip

_INDICES = [0, 1, -1, 10**6, True, False, 1.0, "0", None, [0, 0], [0], [], [-1], [0, 10**6]]
plan_domain = {
    **ATTRIBUTES,  # the attribute fields of "attribute_sets"
    None: mix((3, st.sampled_from(_INDICES)), (1, attribute_dicts)),
    "enable": st.sampled_from([True, False, 0, 1, "false", None]),
    "hard_disabled": st.sampled_from([True, False, 0, 1, "false", None]),
    "attributes": st.sampled_from(_INDICES),
    "sources": st.sampled_from([[], [0], [-1], [10**6], [True], "0", None, [0, 0]]),
    "parent_class": st.sampled_from(["nn.Linear", "nn.Conv2d", "nn.Foo", "", None, 5]),
    "algorithm": st.sampled_from(["max", ["max"], [{"method": "max"}], [{"method": "awq_lite"}], [{"method": "nope"}], {"method": "max"}, [], None, [{"method": "max", "distributed_sync": 5}]]),
    "method": st.sampled_from(["max", "awq_lite", "smoothquant", "nope", None, 5]),
    "format": st.sampled_from(["qconfig.plan/v1", "qconfig.plan/v2", "qconfig.plan/v3", None]),
}  # fmt: skip
PLAN_KEYS = [
    "format", "model", "algorithm", "attribute_sets", "specs", "states", "quantizers",
    "diagnostics", "enable", "attributes", "parent_class", "sources", "hard_disabled",
    "method", "code", "severity", "message",
]  # fmt: skip

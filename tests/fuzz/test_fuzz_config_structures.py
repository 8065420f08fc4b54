"""Fuzz: configs as Python mappings (what ``load_config(dict)`` and ``lint(dict)`` take).

Entry lists, legacy flat dicts (keys of any type), single-key and ``nn.*``-scoped entries,
algorithm names, configs and lists, with valid, near-valid and wrong-typed values; and mutated
real configs as mappings, where keys keep their Python type (``{1: 8}``, ``None``, tuples).
"""

from __future__ import annotations

import pytest
from fuzz_corpus import MANIFESTS
from fuzz_pipeline import config_pipeline
from fuzz_structures import config_dicts
from fuzz_support import run_fuzz, watchdog
from fuzz_text import materialize, mutated_trees
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz


def test_mappings_through_the_pipeline(fuzz_long, workspace):
    def check(args):
        tree, manifest, pick = args
        mapping = materialize(tree)
        if not isinstance(mapping, dict):  # load_config(5) is a TypeError: an API misuse
            mapping = {"quant_cfg": mapping}
        with watchdog(20.0):
            return config_pipeline(mapping, manifest, pick, located=False)

    outcomes = run_fuzz(
        "structures",
        st.tuples(
            st.one_of(config_dicts(), mutated_trees()),
            st.sampled_from(MANIFESTS),
            st.integers(0, 10**6),
        ),
        check,
        long=fuzz_long,
    )
    assert outcomes["compiled"] >= outcomes.total() // 10, outcomes
    assert outcomes["rejected-load"] >= outcomes.total() // 10, outcomes

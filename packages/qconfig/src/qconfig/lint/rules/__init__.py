"""One module per lint rule; importing this package registers them all."""

from qconfig.lint.rules import (  # noqa: F401
    qc201_legacy_form,
    qc202_default_not_first,
    qc203_inner_enable,
    qc204_no_deny_all,
    qc205_unmatched_entry,
    qc206_shadowed_entry,
    qc207_default_int8_enabled,
    qc208_no_weight_quantizer,
    qc209_block_size_fit,
    qc211_parent_class_subclasses,
    qc212_compile_warnings,
    qc214_case_only_match,
    qc215_everything_disabled,
    qc216_lax_types,
    qc217_algorithm_skips,
)

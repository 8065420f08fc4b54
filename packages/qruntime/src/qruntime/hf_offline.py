"""transformers, imported lazily and offline, with an actionable error when it is missing.

Why: qruntime never depends on transformers (docs/getting-started.md), but ``qruntime manifest
--hf-config`` and Hugging Face jobs such as the repository's sentence-embedding example need it,
and they must never reach the network: ``HF_HUB_OFFLINE`` has to be set before
``huggingface_hub`` is first imported, which only a single import point can guarantee.
"""

from __future__ import annotations

import os
from typing import Any

from qruntime.job import JobError

__all__ = ["import_transformers"]


def import_transformers() -> Any:
    """The transformers module, offline and quiet; :class:`JobError` says what to install."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers
    except ImportError as exc:
        raise JobError(
            "this command needs transformers, which qruntime does not install: "
            f"pip install transformers ({exc})"
        ) from None
    transformers.utils.logging.disable_progress_bar()
    return transformers

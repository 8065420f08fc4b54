"""The safetensors file behind a state file: opening it, its format and its metadata.

Why a module: ``read_plan`` and ``restore_state`` open a file that may be anything, and both the
plan and the tensor checks read JSON out of its metadata; each defect found here is one
:class:`~qconfig.errors.DocumentError` naming the file and the metadata key.
"""

from __future__ import annotations

from typing import Any

from qconfig.documents import parse_json
from qconfig.errors import DocumentError
from qconfig.fileio import check_regular_file
from safetensors import SafetensorError, safe_open

__all__ = ["STATE_FORMAT", "StateFile", "metadata_json", "state_metadata"]

STATE_FORMAT = "qruntime.state/v1"


class StateFile:
    """``safe_open`` of a regular file; what safetensors cannot parse is a DocumentError."""

    def __init__(self, file: str) -> None:
        check_regular_file(file)
        self.file = file
        try:
            self.handle = safe_open(file, framework="pt")
        except SafetensorError as exc:
            raise DocumentError(f"not a safetensors file ({exc})", file=file) from None

    def __enter__(self) -> Any:
        return self.handle.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.handle.__exit__(*exc)


def state_metadata(handle: Any, file: str) -> dict[str, str]:
    """The metadata of a state file: ``format`` and ``plan`` are required."""
    metadata = handle.metadata() or {}
    found = metadata.get("format")
    if found != STATE_FORMAT:
        what = "no 'format' in its metadata" if found is None else f"format {found!r}"
        raise DocumentError(
            f"not a {STATE_FORMAT} file ({what}; write one with qruntime.save_state)",
            file=file,
            path=("__metadata__", "format"),
        )
    if "plan" not in metadata:
        raise DocumentError(
            "missing: a state file stores its plan here", file=file, path=("__metadata__", "plan")
        )
    return metadata


def metadata_json(text: str, file: str, where: tuple[int | str, ...]) -> Any:
    """A JSON value of the metadata; not JSON is a DocumentError at ``where``."""
    try:
        return parse_json(text)
    except DocumentError as exc:
        raise DocumentError(f"not valid JSON: {exc}", file=file, path=where) from None

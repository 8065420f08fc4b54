"""Reading an input file without trusting it: only regular files, with a size limit.

Why not ``Path.read_text``: qconfig runs as a pre-commit hook over whatever a repository holds
and qruntime inside long jobs, so a path may name ``/dev/zero`` (``read`` never ends and fills
memory), ``/dev/urandom`` or a FIFO (``open`` or ``read`` blocks for ever), a directory, or a
file the user may not read. Every loader (configs and their imports, manifests, plans, state
files, calibration text) reads through :func:`read_bytes` so each of those is one clear
:class:`InputFileError` instead of a hang, a ``MemoryError`` or a traceback.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = [
    "MAX_INPUT_BYTES",
    "InputFileError",
    "check_regular_file",
    "is_regular_file",
    "read_bytes",
    "read_prefix",
    "read_text",
    "special_kind",
]

MAX_INPUT_BYTES = 256 * 1024 * 1024
"""The largest input file read (256 MiB; a manifest of a 100k-quantizer MoE is ~60 MB)."""


class InputFileError(OSError):
    """A file that cannot be read as input: missing, not a regular file, unreadable, too large,
    or not text in the expected encoding. ``str()`` is one line that names the file.

    ``kind`` says which, for callers that treat them differently (``"missing"``,
    ``"not_regular"`` — a directory, FIFO, device or socket —, ``"unreadable"``,
    ``"too_large"``, ``"not_text"``); ``line`` and ``column`` locate a byte that is not text,
    and ``detail`` is the reason without that position.
    """

    def __init__(
        self,
        file: str,
        detail: str,
        *,
        kind: str = "unreadable",
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.file = file
        self.detail = detail
        self.kind = kind
        self.line = line
        self.column = column
        self.reason = detail if line is None else f"line {line}, column {column}: {detail}"
        super().__init__(f"{file}: {self.reason}")

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


def _open_regular(file: str) -> int:
    """A descriptor of ``file`` opened without blocking, or InputFileError unless it is a
    regular file this process may read (a FIFO without a writer would block a plain open)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(file, flags)
    except FileNotFoundError:
        raise InputFileError(file, "no such file", kind="missing") from None
    except IsADirectoryError:
        raise InputFileError(file, "is a directory, not a file", kind="not_regular") from None
    except PermissionError:
        raise InputFileError(file, "permission denied") from None
    except OSError as exc:
        raise InputFileError(file, f"cannot open ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InputFileError(file, "is a directory, not a file", kind="not_regular")
        if not stat.S_ISREG(mode):
            raise InputFileError(
                file, f"is a {special_kind(mode)}, not a regular file", kind="not_regular"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_regular_file(path: str | os.PathLike) -> None:
    """Raise :class:`InputFileError` unless ``path`` is a regular file this process may open;
    never blocks and reads nothing (for callers that hand the path on to another reader)."""
    os.close(_open_regular(os.fspath(path)))


def read_bytes(path: str | os.PathLike, *, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a regular file, at most ``max_bytes`` of them."""
    file = os.fspath(path)
    fd = _open_regular(file)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise InputFileError(
                file, f"is {size:,} bytes; the limit is {max_bytes:,} bytes", kind="too_large"
            )
        data = _read_upto(fd, file, max_bytes)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # a file that grows while we read stops at the limit too
        raise InputFileError(
            file, f"is larger than the limit of {max_bytes:,} bytes", kind="too_large"
        )
    return data


def read_prefix(path: str | os.PathLike, limit: int) -> tuple[bytes, bool]:
    """At most the first ``limit`` bytes of a regular file, and whether that is all of it (for
    a caller that judges a file by its beginning)."""
    file = os.fspath(path)
    fd = _open_regular(file)
    try:
        data = _read_upto(fd, file, limit)
    finally:
        os.close(fd)
    return data[:limit], len(data) <= limit


def _read_upto(fd: int, file: str, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes (one more tells that the file is longer)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise InputFileError(file, f"cannot read ({exc.strerror or exc})") from None
    return b"".join(chunks)


def read_text(
    path: str | os.PathLike, *, encoding: str = "utf-8-sig", max_bytes: int = MAX_INPUT_BYTES
) -> str:
    """The text of a regular file; bytes that are not ``encoding`` are an :class:`InputFileError`
    naming the byte offset (with ``utf-8-sig`` a leading BOM is dropped)."""
    data = read_bytes(path, max_bytes=max_bytes)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputFileError(
            os.fspath(path),
            f"not valid {_encoding_name(encoding)} "
            f"(byte 0x{data[exc.start]:02x} at offset {exc.start})",
            kind="not_text",
            line=line,
            column=column,
        ) from None


def _encoding_name(encoding: str) -> str:
    return "UTF-8" if encoding.replace("-", "").lower().startswith("utf8") else encoding


def special_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words (for error messages)."""
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def is_regular_file(path: str | os.PathLike) -> bool:
    """True for an existing regular file (following links); never blocks, never raises."""
    try:
        return Path(path).is_file()
    except OSError:
        return False

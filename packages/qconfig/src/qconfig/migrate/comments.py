"""ruamel.yaml comment plumbing: move the comments of a converted element with it.

ruamel keeps the comment printed after an item on that item: ``map.ca.items[key][2]`` or
``seq.ca.items[index][0]``; its text is the end-of-line comment (or nothing) and a line break,
then any full-line comments up to the next item. Moving an entry therefore means moving those
texts: the end-of-line part stays with its line, the full lines stay with the *end* of the entry,
so that a comment written above the next entry still sits above it.

Every helper is a no-op on plain dicts and lists, so JSON goes through the same conversion.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


@dataclass
class CommentsAfter:
    """A comment after an item: an end-of-line token (or None) and the full lines after it."""

    eol: Any = None  # a ruamel CommentToken whose value is "# text\n"
    lines: str = ""

    def __bool__(self) -> bool:
        return self.eol is not None or bool(self.lines)

    def then(self, other: CommentsAfter) -> CommentsAfter:
        """This comment followed by ``other`` (an end-of-line of ``other`` becomes a line)."""
        if self.eol is None and not self.lines:
            return other
        if self.eol is None:  # lines came between: ``other``'s end-of-line becomes a line
            extra = _as_lines(other.eol) if other.eol is not None else ""
            return CommentsAfter(None, self.lines + extra + other.lines)
        extra = _as_lines(other.eol) if other.eol is not None else ""
        return CommentsAfter(self.eol, self.lines + extra + other.lines)


def is_flow(node: Any) -> bool:
    fa = getattr(node, "fa", None)
    return bool(fa is not None and fa.flow_style())


def is_block_container(node: Any) -> bool:
    return isinstance(node, (dict, list)) and bool(node) and not is_flow(node)


def _slot_index(node: Any) -> int:
    return 0 if isinstance(node, list) else 2


def pop_after(node: Any, key: Any) -> CommentsAfter:
    """Detach the comment after ``node[key]``."""
    ca = getattr(node, "ca", None)
    comments = None if ca is None else ca.items.get(key)
    index = _slot_index(node)
    if not comments or len(comments) <= index or comments[index] is None:
        return CommentsAfter()
    token = comments[index]
    comments[index] = None
    return pop_after_token(token)


def pop_before(node: Any, key: Any) -> str:
    """Detach the full-line comments ruamel keeps *before* ``node[key]`` (slot 1)."""
    ca = getattr(node, "ca", None)
    comments = None if ca is None else ca.items.get(key)
    if not comments or len(comments) < 2 or not comments[1]:
        return ""
    tokens = comments[1]
    comments[1] = None
    return "".join(_as_lines(t) for t in tokens)


def pop_after_token(token: Any) -> CommentsAfter:
    """A detached comment token as an :class:`CommentsAfter`."""
    head, sep, rest = token.value.partition("\n")
    if not head.strip():
        return CommentsAfter(None, rest)
    eol = copy.copy(token)
    eol.value = head + sep
    return CommentsAfter(eol, rest)


def set_after(node: Any, key: Any, after: CommentsAfter) -> None:
    """Attach ``after`` to ``node[key]``, after the comment already there."""
    if not after or not hasattr(node, "ca"):
        return
    after = pop_after(node, key).then(after)
    comments = node.ca.items.setdefault(key, [None, None, None, None])
    while len(comments) < 4:
        comments.append(None)
    if after.eol is not None:
        token = copy.copy(after.eol)
        token.value = after.eol.value + after.lines
    else:
        token = comment_token("\n" + after.lines)
    comments[_slot_index(node)] = token


def comment_token(text: str, column: int = 0) -> Any:
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    return CommentToken(text, CommentMark(column), None)


def last_slot(node: Any) -> tuple[Any, Any] | None:
    """The (container, key) whose trailing comment is printed last for a block ``node``."""
    if not is_block_container(node):
        return None
    key = next(reversed(node)) if isinstance(node, dict) else len(node) - 1
    inner = last_slot(node[key])
    return inner if inner is not None else (node, key)


def take_tail(node: Any) -> str:
    """Detach the full-line comments printed after the last line of block ``node``."""
    slot = last_slot(node)
    if slot is None:
        return ""
    after = pop_after(*slot)
    set_after(*slot, CommentsAfter(after.eol))
    return after.lines


def take_pre(node: Any) -> str:
    """Detach the full-line comments between a block container's key line and its first item
    (and ruamel's copy of the key's end-of-line comment, which the caller moves itself)."""
    ca = getattr(node, "ca", None)
    if ca is None or not ca.comment:
        return ""
    tokens = ca.comment[1] if len(ca.comment) > 1 else None
    ca.comment = None
    return "".join(_as_lines(t) for t in tokens or ())


def _as_lines(token: Any) -> str:
    """A comment token as full lines at its own column (ruamel strips the indentation)."""
    value = token.value
    if value.startswith("#"):
        value = " " * (token.column or 0) + value
    return value if value.endswith("\n") else value + "\n"

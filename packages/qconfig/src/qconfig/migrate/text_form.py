"""The form of a config's text that a migration keeps: byte-order mark and line endings.

Why: the conversion works on LF text (ruamel writes ``\\n``, and the splice compares lines), so
a CRLF file came back LF everywhere and lost its BOM, which shows as a whole-file diff and breaks
tools that expect the BOM. The text is normalized before the conversion and the result put
back into the original form.

A file that mixes CRLF and LF gets the *dominant* ending on every line (on a tie, the ending
of its first line): the converted elements are new lines that have no ending of their own, and
one ending throughout is what an editor would write. Line endings never change what YAML or
JSON means (YAML normalizes line breaks inside scalars; JSON strings cannot hold raw ones).
"""

from __future__ import annotations

from typing import NamedTuple

BOM = "\ufeff"
CRLF = "\r\n"
LF = "\n"


class TextForm(NamedTuple):
    """``bom``: the text starts with U+FEFF; ``newline``: ``"\\r\\n"`` or ``"\\n"``."""

    bom: bool
    newline: str

    @classmethod
    def of(cls, text: str) -> TextForm:
        """The form of ``text``: its BOM, and its dominant line ending."""
        crlf = text.count(CRLF)
        lf = text.count(LF) - crlf
        if crlf == lf:  # a tie (or a single line): the first line's ending decides
            first = text.find(LF)
            newline = CRLF if first > 0 and text[first - 1] == "\r" else LF
        else:
            newline = CRLF if crlf > lf else LF
        return cls(text.startswith(BOM), newline)

    def normalize(self, text: str) -> str:
        """``text`` without its BOM, with LF line endings (what the conversion works on)."""
        if self.bom:
            text = text[len(BOM) :]
        return text.replace(CRLF, LF)

    def apply(self, text: str) -> str:
        """LF ``text`` (a conversion's result) in this form."""
        if self.newline != LF:
            text = text.replace(LF, self.newline)
        return BOM + text if self.bom else text

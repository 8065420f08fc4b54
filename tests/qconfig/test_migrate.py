"""``qconfig.migrate`` on generated legacy configs: same config, same comments, idempotent.

Hand-written cases (tests/e2e/test_cli.py) show the layouts people write; these generated ones
find the layouts nobody thinks of: comments after empty flow mappings, before the next
top-level key, inside ``nn.*`` scopes, kept list entries between converted ones. Every case
must migrate (``migrate_text`` itself refuses a result that loads to another config), keep every
comment, leave no legacy form behind and be a fixed point.
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qconfig.cli import main
from qconfig.migrate import MigrationError, migrate_text
from qconfig.normalize import expand_quant_cfg

PATTERNS = [
    '"*weight_quantizer"',
    '"*input_quantizer"',
    '"*lm_head*"',
    "default",
    '"*mlp*"',
    '"*[kv]_bmm_quantizer"',
]
FLOW_VALUES = [
    "{num_bits: 8, axis: 0}",
    "{num_bits: 8, axis: null}",
    "{enable: false}",
    "{num_bits: e4m3, axis: null, enable: true}",
    "{num_bits: 4, block_sizes: {-1: 128, type: static}}",
    "{}",
]


class _Gen:
    """A random legacy config in YAML text (flat dict or list; flow and block values)."""

    def __init__(self, seed: int):
        self.rnd = random.Random(seed)
        self.n = 0

    def note(self, indent: int) -> list[str]:
        self.n += 1
        return [" " * indent + f"# note {self.n}"] if self.rnd.random() < 0.3 else []

    def eol(self, p: float = 0.35) -> str:
        self.n += 1
        return f"  # eol {self.n}" if self.rnd.random() < p else ""

    def block(self, indent: int) -> list[str]:
        options = [
            ("num_bits", self.rnd.choice(["8", "4", "e4m3"])),
            ("axis", self.rnd.choice(["0", "null"])),
            ("enable", self.rnd.choice(["true", "false"])),
        ]
        self.rnd.shuffle(options)
        out = []
        for key, value in options[: self.rnd.randint(1, 3)]:
            out.append(" " * indent + f"{key}: {value}{self.eol()}")
            out += self.note(indent)
        return out

    def pair(self, prefix: str, indent: int, pattern: str) -> list[str]:
        if self.rnd.random() < 0.5:
            return [f"{prefix}{pattern}: {self.rnd.choice(FLOW_VALUES)}{self.eol()}"]
        return [f"{prefix}{pattern}:{self.eol(0.3)}", *self.block(indent)]

    def config(self) -> str:
        flat = self.rnd.random() < 0.5
        out = ["algorithm: max"] if self.rnd.random() < 0.5 else []
        out.append("quant_cfg:" + self.eol(0.3))
        used: set[str] = set()
        prefix, indent = ("  ", 4) if flat else ("  - ", 6)
        for _ in range(self.rnd.randint(1, 6)):
            out += self.note(2)
            if self.rnd.random() < 0.2:
                scope = self.rnd.choice(["nn.Linear", "nn.Conv2d"])
                if flat and scope in used:
                    continue
                used.add(scope)
                out.append(f"{prefix}{scope}:{self.eol(0.3)}")
                for pattern in self.rnd.sample(PATTERNS[:3], self.rnd.randint(1, 2)):
                    out += self.note(indent)
                    out += self.pair(" " * indent, indent + 2, pattern)
                continue
            pattern = self.rnd.choice(PATTERNS)
            if flat and pattern in used:
                continue
            used.add(pattern)
            if not flat and self.rnd.random() < 0.3:  # an entry already in list form
                name = '"*"' if pattern == "default" else pattern
                out.append(f"  - {{ quantizer_name: {name}, enable: false }}{self.eol(0.5)}")
                continue
            out += self.pair(prefix, indent, pattern)
        out += self.note(0)
        if self.rnd.random() < 0.3:
            out.append("algorithm: max" if not out[0].startswith("algorithm") else "# the end")
        return "\n".join(out) + "\n"


def _comments(text: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for line in text.splitlines():
        match = re.search(r"(?:^|\s)(#.*)$", line)
        if match:
            found[match.group(1).strip()] += 1
    return found


def _legacy_left(text: str) -> bool:
    import yaml

    quant_cfg = yaml.safe_load(text)["quant_cfg"]
    return any(entry.legacy for entry in expand_quant_cfg(quant_cfg, warn=False))


@pytest.mark.parametrize("block", range(2))
def test_generated_legacy_configs_migrate_cleanly(block):
    migrated = 0
    for seed in range(block * 60, (block + 1) * 60):
        text = _Gen(seed).config()
        result = migrate_text(text)
        assert _comments(result.text) == _comments(text), f"seed {seed}:\n{text}\n{result.text}"
        if not result.changed:
            assert not _legacy_left(text)
            continue
        migrated += 1
        assert not _legacy_left(result.text), f"seed {seed}:\n{result.text}"
        again = migrate_text(result.text)
        assert not again.changed and again.text == result.text, f"seed {seed}"
    assert migrated >= 40  # most generated configs have a legacy element


def test_refuses_what_it_cannot_migrate_safely():
    with pytest.raises(MigrationError, match="does not load"):
        migrate_text('quant_cfg:\n  "*": 8\n')  # a legacy value that is not a config
    with pytest.raises(MigrationError, match=r"\$import"):
        migrate_text(
            "imports:\n  u: qconfig/units/default_disabled_quantizers\nquant_cfg:\n  $import: u\n"
        )


# -- the file's form: line endings and byte-order mark -------------------------------------------

EXAMPLE_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "examples" / "configs").glob("*.*"))


def _lf_sources() -> list[tuple[str, str]]:
    """``(suffix, LF text)``: the example configs (list form) and generated legacy configs."""
    examples = [(p.suffix, p.read_text(encoding="utf-8")) for p in EXAMPLE_CONFIGS]
    return examples + [(".yaml", _Gen(seed).config()) for seed in range(300, 340)]


LF_SOURCES = _lf_sources()


@st.composite
def text_variants(draw) -> tuple[str, str, str]:
    """``(suffix, LF text, the same text with a BOM and CRLF/LF/mixed line endings)``."""
    suffix, text = draw(st.sampled_from(LF_SOURCES))
    lines = text.split("\n")  # the text ends with a newline: the last item is ""
    style = draw(st.sampled_from(["lf", "crlf", "mixed"]))
    if style == "mixed":
        crlf = draw(st.lists(st.booleans(), min_size=len(lines) - 1, max_size=len(lines) - 1))
    else:
        crlf = [style == "crlf"] * (len(lines) - 1)
    body = "".join(line + ("\r\n" if c else "\n") for line, c in zip(lines[:-1], crlf, strict=True))
    return suffix, text, ("\ufeff" if draw(st.booleans()) else "") + body


def _dominant_newline(text: str) -> str:
    """The rule docs/errors.md and qconfig.migrate.text_form state: the majority ending, and
    on a tie the first line's."""
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    if crlf != lf:
        return "\r\n" if crlf > lf else "\n"
    first = text.index("\n")
    return "\r\n" if text[first - 1 : first] == "\r" else "\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variant=text_variants())
def test_migrate_write_keeps_line_endings_and_bom(variant):
    """``migrate --write`` of a CRLF/mixed/BOM file == the LF file's migration, in the
    original's form; a file with nothing to migrate is left byte for byte."""
    suffix, lf_text, text = variant
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"config{suffix}"
        path.write_bytes(text.encode("utf-8"))
        reference = migrate_text(lf_text, json_format=suffix == ".json", base_dir=tmp)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(["migrate", str(path)]) == 0, err.getvalue()
            assert main(["migrate", "--write", str(path)]) == 0, err.getvalue()
        written = path.read_bytes().decode("utf-8")
    if not reference.changed:
        assert written == text and out.getvalue() == text
        return
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    expected = bom + reference.text.replace("\n", _dominant_newline(text))
    assert written == expected
    assert out.getvalue() == expected  # stdout shows what --write writes


@settings(max_examples=300)
@given(
    text=st.lists(
        st.text(st.characters(blacklist_characters="\r\n\ufeff"), max_size=8), min_size=2
    ).map("\n".join),
    bom=st.booleans(),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_text_form_round_trips(text, bom, newline):
    from qconfig.migrate.text_form import TextForm

    form = TextForm(bom, newline)
    applied = form.apply(text)
    assert TextForm.of(applied) == form
    assert form.normalize(applied) == text


def test_migrate_of_a_crlf_json_file_keeps_crlf_and_bom(tmp_path):
    path = tmp_path / "legacy.json"
    lf = '{\n  "quant_cfg": {\n    "default": {"enable": false}\n  }\n}\n'
    path.write_bytes(("\ufeff" + lf.replace("\n", "\r\n")).encode("utf-8"))
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["migrate", "--write", str(path)]) == 0
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf{\r\n") and b"quantizer_name" in data
    assert data.count(b"\n") == data.count(b"\r\n")

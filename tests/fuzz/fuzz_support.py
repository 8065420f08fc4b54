"""What every fuzz test shares: example counts, guards, the allowed errors and the checks.

Why a module and not the conftest: the tests import these names, and a conftest is not a
module one can import by name (tests/fuzz/README.md says how the suite is run).

Counts: each test has a share of :data:`DEFAULT_TOTAL` examples. Every test runs twice over:
``[default]`` (``make test``) runs its share, derandomized, so CI runs the same examples every
time; ``[long]``, marked ``fuzz_long`` and deselected unless asked for (``make fuzz-long``),
runs the same fraction of :data:`LONG_TOTAL` (50,000, or ``QCONFIG_FUZZ_EXAMPLES``) with a
random seed that Hypothesis prints with any failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "examples"
PRESETS_JSON = ROOT / "tests" / "data" / "presets-0.47.json"

#: Each test's examples in the default profile (``make test``); they add up to DEFAULT_TOTAL.
SHARES = {
    "text": 800,
    "text-files": 250,
    "bombs": 40,
    "imports": 30,
    "structures": 600,
    "manifests": 300,
    "plans": 300,
    "cli": 150,
    "state": 120,
    "apply": 120,
    "configs-applied": 150,
}
DEFAULT_TOTAL = sum(SHARES.values())
#: Examples of the whole suite in the long run (``make fuzz-long``); QCONFIG_FUZZ_EXAMPLES
#: overrides it.
LONG_TOTAL = int(os.environ.get("QCONFIG_FUZZ_EXAMPLES", "") or 50_000)


def examples(name: str, *, long: bool = False) -> int:
    """Test ``name``'s examples: its share, or in the long run the same fraction of LONG_TOTAL."""
    share = SHARES[name]
    return -(-share * LONG_TOTAL // DEFAULT_TOTAL) if long else share


def fuzz_settings(name: str, *, long: bool = False, shrink: bool = True) -> settings:
    """Hypothesis settings for test ``name``.

    Derandomized and without a database by default, so a CI failure is the same failure on
    every machine; random in the long run (Hypothesis prints the seed and a blob to reproduce
    a failure). No Hypothesis deadline: timing is the :func:`watchdog`'s job (a deadline on two
    shared cores flakes), and bombs have their own budget (:func:`budget`). ``shrink=False`` for
    inputs that are slow while they fail (a bomb expanded before it is rejected): the generated
    example is already small.
    """
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if shrink:
        phases.append(Phase.shrink)
    return settings(
        max_examples=examples(name, long=long),
        derandomize=not long,
        database=None,
        deadline=None,
        phases=phases,
        print_blob=long,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


def run_fuzz(
    name: str,
    strategy: st.SearchStrategy,
    check: Callable[[Any], str],
    *,
    long: bool = False,
    shrink: bool = True,
    seeds: tuple[Any, ...] = (),
) -> Counter:
    """Run ``check`` on test ``name``'s examples; returns how many of each outcome there were.

    ``check`` returns a short outcome label (``"compiled"``, ``"rejected-load"``...); the
    counts let a test assert that enough examples reached the deep end of the pipeline.
    ``seeds`` are values of ``strategy`` that always run first: failures the suite once found
    (most in the long run), kept as regression examples.
    """
    outcomes: Counter = Counter()
    failures: dict[str, list[Any]] = {}

    def one(value: Any) -> None:
        if not COLLECT:
            outcomes[check(value)] += 1
            return
        try:
            outcomes[check(value)] += 1
        except (Exception, FuzzTimeout) as exc:
            outcomes["FAILED"] += 1
            _collect(failures, exc, value)

    for seed in reversed(seeds):
        one = example(seed)(one)
    fuzz_settings(name, long=long, shrink=shrink and not COLLECT)(given(strategy)(one))()
    print(name, dict(outcomes))
    _record(name, outcomes, failures)
    assert not failures, f"{len(failures)} failure classes: {sorted(failures)}"
    assert outcomes.total() >= examples(name, long=long), outcomes
    return outcomes


#: ``QCONFIG_FUZZ_COLLECT=<file>``: instead of stopping at the first failure (and shrinking
#: it), run every example, group the failures by exception type and where they were raised,
#: and append each class with its shortest example to ``<file>`` (JSON lines): a triage run.
COLLECT = os.environ.get("QCONFIG_FUZZ_COLLECT", "")


def failure_class(exc: BaseException) -> str:
    """``Type @ module:function`` of the innermost frame in qconfig/qruntime (an assertion of
    the suite: its message, digits dropped)."""
    frames = traceback.extract_tb(exc.__traceback__)
    product = [f for f in frames if "/packages/q" in f.filename.replace(os.sep, "/")]
    where = f"{Path(product[-1].filename).stem}.{product[-1].name}" if product else "tests"
    key = f"{type(exc).__name__} @ {where}"
    if isinstance(exc, AssertionError):
        key += ": " + re.sub(r"\d+", "N", str(exc).split("\n")[0])[:70]
    return key


def _collect(failures: dict[str, list[Any]], exc: BaseException, value: Any) -> None:
    key = failure_class(exc)
    example = repr(value)
    message = " | ".join(str(exc).splitlines())[:500]
    known = failures.get(key)
    if known is None:
        failures[key] = [example, message, 1]
        return
    known[2] += 1
    if len(example) < len(known[0]):
        known[0], known[1] = example, message


def _record(name: str, outcomes: Counter, failures: dict[str, list[Any]]) -> None:
    """With ``QCONFIG_FUZZ_REPORT=<file>``, append the counts (the long run's summary); in a
    triage run, the failure classes to the ``QCONFIG_FUZZ_COLLECT`` file."""
    out = os.environ.get("QCONFIG_FUZZ_REPORT")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": name, "outcomes": dict(outcomes)}) + "\n")
    if COLLECT and failures:
        with open(COLLECT, "a", encoding="utf-8") as f:
            for key, (example, message, count) in sorted(failures.items()):
                row = {"test": name, "class": key, "count": count, "message": message}
                f.write(json.dumps({**row, "example": example[:4000]}) + "\n")


# -- guards ---------------------------------------------------------------------------------


class FuzzTimeout(BaseException):
    """An example ran past its time limit: a hang or a bomb that was expanded (a failure).

    A BaseException, so that code under test that catches ``Exception`` (the CLI turns it
    into exit status 3) cannot swallow it and carry on."""


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise :class:`FuzzTimeout` in the running code after ``seconds``.

    SIGALRM interrupts Python loops and blocking system calls (``open`` of a FIFO), so a hang
    fails the example instead of the whole run. Only the main thread gets signals; elsewhere
    this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise FuzzTimeout(f"example still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _virtual_size() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def memory_ceiling(extra_bytes: int = 1 << 30) -> Iterator[None]:
    """Let the process grow by at most ``extra_bytes`` of address space (else MemoryError).

    Why: an input the code under test expands without limit (``/dev/zero``, an import bomb)
    would otherwise take the machine's memory, shared by the other test workers, before it
    fails. A MemoryError is not an allowed error, so the example still fails.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = _virtual_size()
    if not size:
        yield
        return
    limit = size + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


#: What rejecting a bomb may cost (issue 11): < 1 s and < 200 MB. The time limit leaves room
#: for two shared CPUs; an expanded bomb takes far longer.
BOMB_SECONDS = 3.0
BOMB_BYTES = 200 * 1024 * 1024


@contextlib.contextmanager
def budget(seconds: float = BOMB_SECONDS, max_bytes: int = BOMB_BYTES) -> Iterator[None]:
    """Time and memory limits for rejecting a bomb: the process may grow by ``max_bytes`` of
    address space (a MemoryError past it is reported as the budget exceeded) and the block
    may run ``seconds``. Why not tracemalloc: it slows the loader five to ten times, so every
    legitimate large input would look like a bomb."""
    try:
        with memory_ceiling(max_bytes), watchdog(seconds):
            yield
    except MemoryError:
        raise AssertionError(f"needed more than {max_bytes:,} bytes (MemoryError)") from None


# -- allowed errors and their checks --------------------------------------------------------


def qconfig_errors() -> tuple[type[BaseException], ...]:
    """The error types qconfig documents (docs/errors.md); anything else is a fuzz failure."""
    from qconfig.errors import ConfigError, DocumentError
    from qconfig.fileio import InputFileError
    from qconfig.migrate import MigrationError

    return (ConfigError, DocumentError, InputFileError, MigrationError)


def check_config_error(exc: BaseException, *, located: bool) -> None:
    """A ConfigError must carry diagnostics with a code and a one-paragraph message; with
    ``located`` (text or a file was given), each must say at which line."""
    diagnostics = getattr(exc, "diagnostics", None)
    assert diagnostics, f"{type(exc).__name__} without diagnostics: {exc}"
    for d in diagnostics:
        check_diagnostic(d)
        if located:
            assert d.line is not None, f"diagnostic without a line: {d}"


def check_diagnostic(d: Any) -> None:
    """One diagnostic: a QCnnn code, a severity, a message that is not a traceback."""
    assert isinstance(d.code, str) and d.code[:2] == "QC" and d.code[2:].isdigit(), d
    assert d.severity in ("error", "warning", "info"), d
    assert isinstance(d.message, str) and d.message.strip(), d
    assert "Traceback (most recent call last)" not in d.message, d
    str(d)  # renders


def check_document_error(exc: BaseException) -> None:
    """A DocumentError / InputFileError renders as one line naming what is wrong."""
    text = str(exc)
    assert text.strip(), f"{type(exc).__name__} with an empty message"
    assert "Traceback (most recent call last)" not in text, text


def strict_json(text: str) -> Any:
    """Parse ``text`` as RFC 8259 JSON: NaN and Infinity are not JSON (other tools reject
    them), so a file we write must not contain them."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"not JSON: {token} in a file qconfig wrote")

    return json.loads(text, parse_constant=refuse)

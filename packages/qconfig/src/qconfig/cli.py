"""The ``qconfig`` command: lint, compile, explain and migrate quantization configs.

Why a CLI at all: the expensive mistakes in a quantization config (a pattern that matches
nothing, a legacy ``default`` placed last, a block size that does not divide a layer) are only
found by Model Optimizer after a long calibration. ``qconfig lint`` finds them in well under a
second, in an editor, a pre-commit hook or CI, so it has to start fast: this module imports
nothing heavy at the top, and each command imports what it needs (pydantic and the models
dominate the start-up time of ``lint``; ``--help`` never pays for them).

Exit codes (every command):

* ``0`` — success; for ``lint``: no errors (and, with ``--strict``, no warnings either;
  info-level notes never fail and are only shown with ``--show-info``);
* ``1`` — findings: ``lint`` found an error (or a warning under ``--strict``); ``plan`` /
  ``explain`` / ``migrate`` could not load or compile the config; ``schema --check`` found a
  stale file;
* ``2`` — usage or I/O error: bad arguments, a file or manifest that cannot be read, an unknown
  preset or quantizer name.

``lint`` prints ``path:line:col: CODE message (json.path)`` like ruff and flake8 (``--format
json`` for tools, ``--format github`` for workflow annotations); colour only on a terminal,
never when ``NO_COLOR`` is set.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from qconfig.errors import Diagnostic
    from qconfig.manifest import Manifest

__all__ = ["EXIT_FINDINGS", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2

_CONFIG_KEYS = frozenset({"quant_cfg", "algorithm", "quantize"})


class UsageError(Exception):
    """A problem with the command line or an input file: exit status 2."""


# --------------------------------------------------------------------------------------------
# output helpers
# --------------------------------------------------------------------------------------------
def _use_color(stream: TextIO, mode: str) -> bool:
    """Colour only for a person at a terminal (https://no-color.org: NO_COLOR disables it)."""
    if mode != "auto":
        return mode == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


_COLORS = {"error": "31", "warning": "33", "info": "36", "bold": "1", "dim": "2"}


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_COLORS[style]}m{text}\x1b[0m" if color else text


def _format_text(d: Diagnostic, color: bool) -> str:
    where = f" ({d.path})" if d.path else ""
    return (
        f"{_paint(d.location(), 'bold', color)}: {_paint(d.code, d.severity, color)} "
        f"{d.message}{_paint(where, 'dim', color) if where else ''}"
    )


def _github_escape(text: str, *, prop: bool = False) -> str:
    """Workflow-command escaping (actions/toolkit ``escapeData`` / ``escapeProperty``)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def _format_github(d: Diagnostic) -> str:
    level = {"error": "error", "warning": "warning"}.get(d.severity, "notice")
    props = [f"file={_github_escape(d.file or '', prop=True)}"]
    if d.line is not None:
        props.append(f"line={d.line}")
        if d.column is not None:
            props.append(f"col={d.column}")
    props.append(f"title={_github_escape(d.code, prop=True)}")
    where = f" ({d.path})" if d.path else ""
    return f"::{level} {','.join(props)}::{_github_escape(d.message + where)}"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _error(message: str) -> None:
    print(f"qconfig: error: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# shared loading
# --------------------------------------------------------------------------------------------
def _readable(path: str) -> Path:
    """The path of an input file, or UsageError (exit 2) saying why it cannot be read."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file")
    if p.is_dir():
        raise UsageError(f"{path}: is a directory")
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return p


def _load_manifest(path: str) -> Manifest:
    """A manifest that does not load is an input error (2), not a finding in the config."""
    from qconfig.manifest import Manifest

    p = _readable(path)
    try:
        return Manifest.load(p)
    except (ValueError, OSError) as exc:  # JSON syntax or model validation
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path}: not a qconfig manifest ({first})") from None


def _print_diagnostics(diagnostics: list[Diagnostic], fallback_file: str) -> None:
    from dataclasses import replace

    color = _use_color(sys.stderr, "auto")
    for d in diagnostics:
        if d.file is None:
            d = replace(d, file=fallback_file)
        print(_format_text(d, color), file=sys.stderr)


def _load_config_or_report(path: str) -> Any:
    """The validated config, or None after printing its located errors (exit 1)."""
    import warnings

    from qconfig.errors import ConfigError
    from qconfig.loader import load_config

    p = _readable(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # lint reports legacy forms
            return load_config(p)
    except ConfigError as exc:
        _print_diagnostics(exc.diagnostics, path)
        return None


def _compile_or_report(path: str, config: Any, manifest: Manifest) -> Any:
    """The plan, or None after printing the compile errors at their place in the file."""
    from qconfig.compile import CompileError, compile_plan

    try:
        return compile_plan(config, manifest)
    except CompileError as exc:
        import warnings

        from qconfig.lint import lint

        # lint maps normalized entry indices back to the file's lines and columns
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            located = [d for d in lint(Path(path), manifest) if d.severity == "error"]
        _print_diagnostics(located or exc.diagnostics, path)
        return None


# --------------------------------------------------------------------------------------------
# lint
# --------------------------------------------------------------------------------------------
def _looks_like_config(path: Path) -> bool:
    """Is this YAML/JSON file a quantization config (for hooks that see every such file)?

    A config, recipe or snippet has a ``quant_cfg``/``algorithm``/``quantize`` key, a
    ``modelopt-schema`` comment, a qconfig ``$schema``, or is a list of entries. Unparsable
    files count when they mention ``quant_cfg`` (lint then reports the syntax error).
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    head = text[:4096]
    if "modelopt-schema:" in head or "qconfig-config.schema.json" in head:
        return True
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        docs = list(yaml.load_all(text, Loader=loader))
    except yaml.YAMLError:
        return "quant_cfg" in text
    body = docs[-1] if docs else None
    if isinstance(body, dict):
        if str(body.get("format", "")).startswith("qconfig."):
            return False  # a manifest or a plan (a plan has an `algorithm` key too)
        return bool(_CONFIG_KEYS & set(body))
    if isinstance(body, list):
        return any(isinstance(e, dict) and "quantizer_name" in e for e in body)
    return False


def _cmd_lint(args: argparse.Namespace) -> int:
    import warnings
    from dataclasses import replace

    manifest = _load_manifest(args.manifest) if args.manifest else None
    from qconfig.lint import lint

    found: list[Diagnostic] = []
    unreadable = 0
    checked = 0
    hidden = 0
    for file in args.files:
        try:
            path = _readable(file)
        except UsageError as exc:
            _error(str(exc))
            unreadable += 1
            continue
        if args.skip_non_configs and not _looks_like_config(path):
            continue
        checked += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # QC201 reports legacy forms
            diagnostics = lint(path, manifest)
        here = [d if d.file is not None else replace(d, file=file) for d in diagnostics]
        if not args.show_info:
            hidden += sum(d.severity == "info" for d in here)
            here = [d for d in here if d.severity != "info"]
        # the file's own findings first, then those located in files it imports
        here.sort(key=lambda d: (d.file != file, d.file or "", d.line or 0, d.column or 0))
        found += here

    errors = sum(d.severity == "error" for d in found)
    n_warnings = sum(d.severity == "warning" for d in found)
    if args.format == "json":
        import json

        print(json.dumps([d.to_dict() for d in found], indent=2))
    elif args.format == "github":
        for d in found:
            print(_format_github(d))
    else:
        color = _use_color(sys.stdout, args.color)
        for d in found:
            print(_format_text(d, color))
        counts = [_plural(errors, "error")] if errors else []
        counts += [_plural(n_warnings, "warning")] if n_warnings else []
        notes = len(found) - errors - n_warnings
        counts += [_plural(notes, "note")] if notes else []
        extra = f"; {_plural(hidden, 'note')} hidden (--show-info)" if hidden else ""
        if counts:
            listed = ", ".join(counts[:-1]) + (" and " if len(counts) > 1 else "") + counts[-1]
            strict_note = not errors and n_warnings and not args.strict
            tail = "; warnings fail with --strict" if strict_note else ""
            print(f"Found {listed} in {_plural(checked, 'file')}{extra}{tail}.")
        elif checked:
            print(f"All checks passed ({_plural(checked, 'file')}{extra}).")
    if unreadable:
        return EXIT_USAGE
    if errors or (args.strict and n_warnings):
        return EXIT_FINDINGS
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------
def _cmd_schema(args: argparse.Namespace) -> int:
    from qconfig.schema import KINDS, SCHEMA_FILES, render

    if args.all and not args.output:
        raise UsageError("schema --all needs -o DIR")
    if args.all:
        targets = [(kind, Path(args.output) / SCHEMA_FILES[kind]) for kind in KINDS]
    elif args.output:
        targets = [(args.kind, Path(args.output))]
    else:
        if args.check:
            raise UsageError("schema --check needs -o FILE or --all -o DIR")
        sys.stdout.write(render(args.kind))
        return EXIT_OK
    stale = []
    for kind, path in targets:
        text = render(kind)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if args.check:
            if current != text:
                stale.append(path)
            continue
        if current != text:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from None
            print(f"wrote {path}", file=sys.stderr)
        else:
            print(f"unchanged {path}", file=sys.stderr)
    for path in stale:
        print(f"{path}: stale; run `qconfig schema --all -o {path.parent}`", file=sys.stderr)
    return EXIT_FINDINGS if stale else EXIT_OK


# --------------------------------------------------------------------------------------------
# plan / explain
# --------------------------------------------------------------------------------------------
def _cmd_plan(args: argparse.Namespace) -> int:
    manifest = _load_manifest(args.manifest)
    config = _load_config_or_report(args.config)
    if config is None:
        return EXIT_FINDINGS
    plan = _compile_or_report(args.config, config, manifest)
    if plan is None:
        return EXIT_FINDINGS
    for d in plan.diagnostics:
        print(f"{args.config}: {d.severity}: {d.code} {d.message}", file=sys.stderr)
    text = plan.summary() + "\n" if args.summary else plan.to_json()
    if args.output:
        try:
            Path(args.output).write_text(plan.to_json(), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write ({exc.strerror or exc})") from None
        if args.summary:
            sys.stdout.write(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    manifest = _load_manifest(args.manifest)
    config = _load_config_or_report(args.config)
    if config is None:
        return EXIT_FINDINGS
    if _compile_or_report(args.config, config, manifest) is None:
        return EXIT_FINDINGS
    from qconfig.explain import explain

    try:
        explanation = explain(config, manifest, args.quantizer)
    except KeyError as exc:
        raise UsageError(exc.args[0] if exc.args else str(exc)) from None
    print(explanation)
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Preset dicts hold tuples (``num_bits: (4, 3)``); files hold lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cmd_presets(args: argparse.Namespace) -> int:
    from qconfig import presets

    if args.name is None:
        for name in presets.names():
            print(name)
        return EXIT_OK
    try:
        source = presets.path(args.name)
    except KeyError:
        raise UsageError(
            f"unknown preset {args.name!r}; `qconfig presets` lists the names"
        ) from None
    if args.source:
        sys.stdout.write(source.read_text(encoding="utf-8"))
        return EXIT_OK
    value = _plain(presets.get(args.name))
    if args.format == "json":
        import json

        print(json.dumps(value, indent=2))
        return EXIT_OK
    import yaml

    header = (
        f"# Model Optimizer 0.47.0's {args.name}, imports resolved.\n"
        f"# The file it is written in: `qconfig presets {args.name} --source`.\n"
    )
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    body = yaml.dump(value, Dumper=dumper, sort_keys=False, default_flow_style=None, width=100)
    sys.stdout.write(header + body)
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# migrate
# --------------------------------------------------------------------------------------------
def _cmd_migrate(args: argparse.Namespace) -> int:
    from qconfig.migrate import MigrationError, migrate_file

    if len(args.files) > 1 and not args.write:
        raise UsageError("several files need --write (without it the result goes to stdout)")
    status = EXIT_OK
    for file in args.files:
        try:
            path = _readable(file)
            result = migrate_file(path)
        except MigrationError as exc:
            _error(f"{file}: {exc}")
            status = max(status, EXIT_FINDINGS)
            continue
        except UsageError as exc:
            _error(str(exc))
            status = EXIT_USAGE
            continue
        what = (
            f"{_plural(result.converted, 'legacy element')} -> "
            f"{_plural(result.entries, 'entry', 'entries')}"
        )
        if not args.write:
            sys.stdout.write(result.text)
            note = f"{what}; --write rewrites the file" if result.changed else "already list form"
            print(f"{file}: {note}", file=sys.stderr)
            continue
        if not result.changed:
            print(f"{file}: already list form, unchanged", file=sys.stderr)
            continue
        try:
            path.write_text(result.text, encoding="utf-8")
        except OSError as exc:
            _error(f"{file}: cannot write ({exc.strerror or exc})")
            status = EXIT_USAGE
            continue
        print(f"{file}: migrated {what}", file=sys.stderr)
    return status


# --------------------------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (public so the docs and tests can introspect the options)."""
    parser = argparse.ArgumentParser(
        prog="qconfig",
        description=(
            "Lint, compile, explain and migrate Model Optimizer 0.47 quantization configs "
            "(no torch needed)."
        ),
        epilog="Exit status: 0 ok, 1 findings (or a config that does not load), 2 usage/I-O.",
    )
    parser.add_argument("--version", action="version", version=f"qconfig {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "lint",
        help="check configs for errors and silent mistakes",
        description=(
            "Check configs: load/validation errors always; with --manifest also what only the "
            "model shows (patterns that match nothing, shadowed entries, block sizes that do "
            "not divide a layer, ...). Exit 1 on errors, and on warnings with --strict."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML/JSON configs or recipes")
    p.add_argument("--manifest", metavar="M", help="model manifest (qconfig.manifest/v1 JSON)")
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="warnings fail too (exit 1); --no-strict undoes an earlier --strict",
    )
    p.add_argument(
        "--show-info",
        action="store_true",
        help="also report info-level notes (e.g. an exclusion that matches nothing)",
    )
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    p.add_argument(
        "--skip-non-configs",
        action="store_true",
        help=(
            "skip YAML/JSON files that are not quantization configs (for hooks that are "
            "handed every such file in a repository)"
        ),
    )
    p.set_defaults(func=_cmd_lint)

    p = sub.add_parser("schema", help="print or write the draft-07 JSON Schemas")
    p.add_argument("--kind", choices=["config", "manifest", "plan"], default="config")
    p.add_argument("-o", "--output", metavar="PATH", help="file (or directory with --all)")
    p.add_argument("--all", action="store_true", help="write every kind into -o DIR")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if stale")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("plan", help="compile a config against a manifest (plan JSON)")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("--manifest", metavar="M", required=True)
    p.add_argument("-o", "--output", metavar="FILE", help="write the plan JSON here")
    p.add_argument("--summary", action="store_true", help="print a per-format summary")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("explain", help="which entries decided one quantizer, and how")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("--manifest", metavar="M", required=True)
    p.add_argument("quantizer", metavar="QUANTIZER", help="full quantizer name")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("presets", help="list Model Optimizer's named presets, or print one")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.add_argument(
        "--source", action="store_true", help="the preset's YAML file as shipped (with imports)"
    )
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser(
        "migrate",
        help="rewrite legacy quant_cfg forms as list entries (same plan)",
        description=(
            "Rewrite a legacy flat-dict quant_cfg, single-key entries and nn.*-scoped entries "
            "as {quantizer_name, parent_class, cfg, enable} list entries. 'default' becomes "
            "'*' where it stands. The result is checked to load to the same config. Without "
            "--write the migrated file goes to stdout; --write rewrites it in place, keeping "
            "comments."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--write", action="store_true", help="rewrite the file(s) in place")
    p.set_defaults(func=_cmd_migrate)
    return parser


_PYDANTIC_LOADER = "pydantic.plugin._loader"


def _skip_pydantic_plugin_discovery() -> None:
    """Tell pydantic there are no plugins, so the first model build does not look for them.

    Why: pydantic discovers plugins through ``importlib.metadata`` entry points when it builds
    the first model, which imports ``email``, ``zipfile``, ``csv``... and reads the metadata of
    every installed distribution: about a quarter of ``qconfig lint``'s CPU time in an
    environment with torch installed. Validation plugins have no business in a linter's
    process. ``QCONFIG_PYDANTIC_PLUGINS=1`` keeps pydantic's normal discovery; so does a
    ``PYDANTIC_DISABLE_PLUGINS`` naming individual plugins (the user is configuring them). Any
    other name pydantic may look up in the module falls through to the real one.
    """
    if os.environ.get("QCONFIG_PYDANTIC_PLUGINS") == "1" or _PYDANTIC_LOADER in sys.modules:
        return
    if os.environ.get("PYDANTIC_DISABLE_PLUGINS", "__all__") not in ("__all__", "1", "true"):
        return
    import types

    stub = types.ModuleType(_PYDANTIC_LOADER)

    def get_plugins() -> tuple[()]:
        return ()

    def fall_through(name: str) -> Any:
        import importlib

        if name.startswith("__"):  # the import system probes __path__ etc.: a plain module
            raise AttributeError(name)
        del sys.modules[_PYDANTIC_LOADER]
        return getattr(importlib.import_module(_PYDANTIC_LOADER), name)

    stub.get_plugins = get_plugins  # type: ignore[attr-defined]
    stub.__getattr__ = fall_through  # type: ignore[method-assign]
    sys.modules[_PYDANTIC_LOADER] = stub


def _version() -> str:
    from qconfig import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script passes it to ``sys.exit``)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 here
    _skip_pydantic_plugin_discovery()
    try:
        return args.func(args)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except BrokenPipeError:  # `qconfig presets X | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Reference pages generated from the code, so that they cannot go stale.

When Sphinx starts (``builder-inited``), this extension writes Markdown into ``docs/_generated/``
(ignored by git, excluded as pages of their own) that the reference pages ``{include}``:

- ``make_loader.md``: every argument of :func:`tfpathloader.make_loader`, its default (from the
  signature) and meaning and backends (from its docstring: an entry that starts "Torch backend
  only" is the torch backend's; ``tests/unit/test_docs.py`` checks that against make_loader);
- ``cli.md``: every command's ``--help``, from :func:`tfpathloader.tools.cli.build_parser`;
- ``hydra.md``: ``conf/``'s groups and options, and the typed schema of ``train_app/config.py``;
- ``notes.md``: every ``NOTE [topic]`` block of the code, with its file, in full.

Run as a script it prints one of them: ``python docs/_ext/tfpl_docs.py notes``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import sys
import textwrap
import typing
from dataclasses import dataclass
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERATED = os.path.join(ROOT, "docs", "_generated")


# --------------------------------------------------------------------------- docstrings


def docstring_args(doc: str) -> dict[str, str]:
    """The ``Args:`` section of a Google-style docstring: name -> text (joined lines).

    An entry naming several arguments (``rank, world_size: ...``) is given to each.
    """
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "Args:")
    except StopIteration:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for ln in lines[start + 1 :]:
        if not ln.strip():
            continue
        here = len(ln) - len(ln.lstrip())
        if indent is None:
            indent = here
        if here < indent:  # the next section
            break
        m = re.match(r"([\w, ]+):\s*(.*)$", ln.strip())
        if here == indent and m:
            names = [n.strip() for n in m[1].split(",")]
            for n in names:
                out[n] = m[2]
        else:
            for n in names:
                out[n] += " " + ln.strip()
    return out


def rst_to_md(text: str) -> str:
    """Docstring markup as Markdown: roles and double backticks become code spans."""
    text = re.sub(r":[\w:]+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- make_loader


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    backends: str
    meaning: str


def loader_arguments() -> list[Argument]:
    """make_loader's arguments, in signature order."""
    from tfpathloader import make_loader

    sig = inspect.signature(make_loader)
    docs = docstring_args(make_loader.__doc__ or "")
    args = []
    for name, p in sig.parameters.items():
        text = docs.get(name, "")
        if p.default is inspect.Parameter.empty:
            default = "required"
        elif name == "max_file_bytes":
            default = f"`{p.default}` (256 MiB)"
        else:
            default = f"`{p.default!r}`"
        low = text.lower()
        if low.startswith("torch backend only"):
            backends = "torch"
        elif "torch backend only" in low:
            backends = "torch, tf (one value: torch only)"
        else:
            backends = "torch, tf"
        args.append(Argument(name, default, backends, text))
    return args


def link_notes(text: str) -> str:
    """``NOTE [topic]`` in ``text`` as a link to that note on the design-notes page."""
    anchors: dict[str, str] = {}
    for n in all_notes():
        anchors.setdefault(n.topic, _anchor(n))

    def link(m: re.Match[str]) -> str:
        topic = m[1]
        if topic not in anchors:
            return m[0]
        return f"{{ref}}`NOTE [{topic}] <{anchors[topic]}>`"

    return _NOTE_REF.sub(link, text)


def make_loader_page() -> str:
    rows = [
        "| argument | default | backends | meaning |",
        "|---|---|---|---|",
    ]
    for a in loader_arguments():
        rows.append(
            f"| `{a.name}` | {_cell(a.default)} | {a.backends} "
            f"| {_cell(link_notes(rst_to_md(a.meaning)))} |"
        )
    return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------- the CLI


def _commands(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, str]]:
    """(command path, help text) of ``parser`` and every sub-command under it."""
    out = [(path, parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, f"{path} {name}")
    return out


def cli_page() -> str:
    from tfpathloader.tools.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: the same page everywhere
    try:
        commands = _commands(build_parser(), "tfpathloader")
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    parts = []
    for path, text in commands:
        level = "#" * min(4, 1 + path.count(" "))
        parts.append(f"#{level} `{path}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- Hydra


def _type_name(tp: Any) -> str:
    if isinstance(tp, str):
        return tp
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " | ".join(_type_name(a) for a in args) + " | None"
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(tp, "__name__", str(tp))


def hydra_page() -> str:
    sys.path.insert(0, ROOT)
    from train_app.config import Config

    conf = os.path.join(ROOT, "conf")
    hints = typing.get_type_hints(Config)
    parts = []
    with open(os.path.join(conf, "config.yaml")) as f:
        parts.append(f"## `conf/config.yaml`, the root\n\n```yaml\n{f.read().rstrip()}\n```\n")
    for group in sorted(d for d in os.listdir(conf) if os.path.isdir(os.path.join(conf, d))):
        options = sorted(n[:-5] for n in os.listdir(os.path.join(conf, group)) if n[-5:] == ".yaml")
        parts.append(f"## `{group}`: {', '.join(options)}\n")
        schema = hints.get(group)
        if schema is not None and dataclasses.is_dataclass(schema):
            parts.append(
                f"Typed by `{schema.__name__}` (`train_app/config.py`): a key that is not "
                "listed, or a value of the wrong type, is an error when the config is composed.\n"
            )
            parts.append("| key | type | default |\n|---|---|---|")
            types = typing.get_type_hints(schema)
            for f in dataclasses.fields(schema):
                default = (
                    f.default
                    if f.default is not dataclasses.MISSING
                    else "(factory)"
                    if f.default_factory is not dataclasses.MISSING
                    else "required"
                )
                kind = _type_name(types[f.name])
                parts.append(f"| `{group}.{f.name}` | {kind} | `{default!r}` |")
            parts.append("")
        else:
            parts.append("Free-form: each option is a `_target_` node (any keys).\n")
        for opt in options:
            with open(os.path.join(conf, group, f"{opt}.yaml")) as f:
                parts.append(f"`{group}={opt}` (`conf/{group}/{opt}.yaml`):\n")
                parts.append(f"```yaml\n{f.read().rstrip()}\n```\n")
    fields = dataclasses.fields(Config)
    top = [f.name for f in fields if not dataclasses.is_dataclass(hints[f.name])]
    parts.append(
        "Top-level keys: "
        + ", ".join(
            f"`{n}` ({_type_name(hints[n])})" for n in top if n not in ("optimizer", "schedule")
        )
        + ".\n"
    )
    return "\n".join(parts)


# --------------------------------------------------------------------------- NOTE blocks

_NOTE_COMMENT = re.compile(r"^(\s*)#\s?NOTE \[([^\]]+)\]:\s*(.*)$")
_NOTE_DOC = re.compile(r"^(\s*)NOTE \[([^\]]+)\]:\s*(.*)$")
_NOTE_REF = re.compile(r"NOTE \[([^\]]+)\]")
# Where notes are written: the package, the training app, the benchmarks, the docs tools, and
# the test suite's own conventions (module-level comments of tests/: a note inside a test is a
# remark about that test).
NOTE_SOURCES = ("tfpathloader", "train_app", "train.py", "benchmarks", "docs", "tests")


@dataclass(frozen=True)
class Note:
    topic: str
    path: str  # relative to the repository
    line: int
    text: str


def _python_files() -> list[str]:
    files = []
    for src in NOTE_SOURCES:
        full = os.path.join(ROOT, src)
        if os.path.isfile(full):
            files.append(full)
            continue
        for folder, subs, names in os.walk(full):
            subs[:] = sorted(d for d in subs if not d.startswith((".", "_")) or d == "_ext")
            files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    return files


def notes_in(path: str) -> list[Note]:
    """The NOTE blocks of one file: ``# NOTE [topic]: ...`` comments, or a docstring paragraph
    that starts ``NOTE [topic]: ...`` (running to the next NOTE or the end of the docstring)."""
    with open(path) as f:
        lines = f.read().splitlines()
    rel = os.path.relpath(path, ROOT)
    in_tests = rel.startswith("tests" + os.sep)
    notes = []
    for i, ln in enumerate(lines):
        m = _NOTE_COMMENT.match(ln)
        if m:
            if in_tests and m[1]:
                continue
            body = [m[3]]
            for nxt in lines[i + 1 :]:
                c = re.match(r"^\s*#\s?(.*)$", nxt)
                if not c or _NOTE_COMMENT.match(nxt):
                    break
                body.append(c[1])
            notes.append(Note(m[2], rel, i + 1, _join(body)))
            continue
        m = _NOTE_DOC.match(ln)
        if m and not in_tests:
            body = [m[3]]
            indent = len(m[1])
            for nxt in lines[i + 1 :]:
                if '"""' in nxt or _NOTE_DOC.match(nxt):
                    if '"""' in nxt and nxt.split('"""')[0].strip():
                        body.append(nxt.split('"""')[0][indent:])
                    break
                body.append(nxt[indent:] if nxt[:indent].strip() == "" else nxt.strip())
            notes.append(Note(m[2], rel, i + 1, _join(body)))
    return notes


def _join(lines: list[str]) -> str:
    """Lines of a note as Markdown paragraphs (a blank line between paragraphs kept)."""
    text = textwrap.dedent("\n".join([*lines[:1], textwrap.dedent("\n".join(lines[1:]))]))
    return rst_to_md(text.strip())


def all_notes() -> list[Note]:
    return [n for p in _python_files() for n in notes_in(p)]


def note_references() -> list[tuple[str, str, int]]:
    """Every ``NOTE [topic]`` mention in the code: (topic, file, line)."""
    refs = []
    for path in _python_files():
        with open(path) as f:
            for i, ln in enumerate(f, 1):
                refs += [(t, os.path.relpath(path, ROOT), i) for t in _NOTE_REF.findall(ln)]
    return refs


def notes_page() -> str:
    notes = all_notes()
    by_file: dict[str, list[Note]] = {}
    for n in notes:
        by_file.setdefault(n.path, []).append(n)
    parts = [
        f"{len(notes)} notes in {len(by_file)} files. Each is quoted in full below, "
        "under its file.\n",
        "| note | file |",
        "|---|---|",
    ]
    for n in sorted(notes, key=lambda n: n.topic.lower()):
        parts.append(f"| [{n.topic}](#{_anchor(n)}) | `{n.path}` line {n.line} |")
    parts.append("")
    for path, ns in by_file.items():
        parts.append(f"## `{path}`\n")
        for n in ns:
            parts.append(f"({_anchor(n)})=\n### NOTE \\[{n.topic}\\]\n\n{n.text}\n")
    return "\n".join(parts)


def _anchor(n: Note) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", f"{n.path}-{n.topic}".lower()).strip("-")
    return f"note-{slug}"


# --------------------------------------------------------------------------- Sphinx

PAGES = {
    "make_loader": make_loader_page,
    "cli": cli_page,
    "hydra": hydra_page,
    "notes": notes_page,
}


def write_pages(folder: str = GENERATED) -> list[str]:
    """Write every generated page into ``folder``; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    written = []
    for name, make in PAGES.items():
        path = os.path.join(folder, f"{name}.md")
        text = (
            f"<!-- generated by docs/_ext/tfpl_docs.py from the code: do not edit -->\n\n{make()}"
        )
        old = None
        if os.path.exists(path):
            with open(path) as f:
                old = f.read()
        if old != text:  # unchanged files keep their time: Sphinx rebuilds nothing for them
            with open(path, "w") as f:
                f.write(text)
        written.append(path)
    return written


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", lambda app: write_pages())
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.stdout.write(PAGES[sys.argv[1]]())

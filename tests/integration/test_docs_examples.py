"""Every code block of README.md and docs/**/*.md runs, as written, on tiny data.

The fenced ``python`` and ``bash`` blocks are collected from the Markdown and run in a temporary
folder per page that holds tiny demo data made by the library's own writer (``data/``: 5 images
per label, the test split, the indexes) and a copy of its images as ``my_images/`` (one
sub-folder per class):

- a page's ``python`` blocks run in order, in one namespace (a page is read top to bottom);
- each ``bash`` block runs as one script (``bash -e``), with this checkout's package and
  ``tfpathloader`` command first on the paths;
- ``<!-- skip: REASON -->`` right before a block skips it, visibly, with that reason (installs,
  a GPU, a bucket, the test suite itself); ``<!-- fresh-process -->`` runs a ``python`` block
  alone in a new interpreter (import-order examples);
- a ``bash`` block that trains (``train.py``, ``torchrun``) is in the slow tier and runs with
  ``trainer.max_steps=2``; ``tfpathloader demo DIR`` without ``--per-label`` runs with
  ``--per-label 5 --test-per-label 2`` (the full set takes 15 s). Blocks that use TensorFlow
  are marked ``tf``.

Fences of other languages (``text``, ``yaml``, MyST directives such as ``{toctree}``) are not
code; an unlabeled fence is refused, so that no code goes unrun by accident.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest
from conftest import ROOT

NOT_CODE = {"text", "yaml", "json"}  # shown, not run
CODE = {"python", "bash"}
_SKIP = re.compile(r"<!--\s*skip:\s*(?P<reason>.+?)\s*-->")
_FRESH = re.compile(r"<!--\s*fresh-process\s*-->")
_TRAINS = re.compile(r"\b(train\.py|torchrun)\b")
_TINY_TRAIN = {"trainer.max_steps": "2", "trainer.progress": "false"}


def doc_files() -> list[str]:
    """README.md and the pages of docs/ (not the built site, the generated or bench tables)."""
    files = [os.path.join(ROOT, "README.md")]
    for folder, subs, names in os.walk(os.path.join(ROOT, "docs")):
        subs[:] = sorted(d for d in subs if not d.startswith(("_", ".")) and d != "bench")
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".md")]
    return files


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None = None
    fresh: bool = False

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}:{self.lang}"


def blocks_of(path: str) -> list[Block]:
    """The fenced blocks of one Markdown file, with the marker comment right before each."""
    with open(path) as f:
        lines = f.read().splitlines()
    page = os.path.relpath(path, ROOT)
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(```+|~~~+)\s*(\S*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m[1], m[2], i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == fence)
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = _SKIP.search(before)
        out.append(
            Block(
                page,
                start + 1,
                lang,
                "\n".join(lines[start + 1 : end]) + "\n",
                skip=skip["reason"] if skip else None,
                fresh=bool(_FRESH.search(before)),
            )
        )
        i = end + 1
    return out


ALL = [b for f in doc_files() for b in blocks_of(f)]
RUN = [b for b in ALL if b.lang in CODE]


def _marks(block: Block) -> list[pytest.MarkDecorator]:
    marks = []
    if block.lang == "bash" and _TRAINS.search(block.code):
        marks.append(pytest.mark.slow)
    if "tensorflow" in block.code or 'backend="tf"' in block.code:
        marks.append(pytest.mark.tf)
    return marks


def test_every_fence_names_its_language():
    bad = [
        b.id
        for b in ALL
        if b.lang not in CODE | NOT_CODE and not (b.lang.startswith("{") and b.lang.endswith("}"))
    ]
    assert not bad, f"fences without a known language (python, bash, text, yaml, json): {bad}"
    assert len(RUN) >= 30, "the collector found fewer code blocks than the docs hold"


# --------------------------------------------------------------------------- the folders


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory):
    """``data/`` (the demo at 5 images per label) and ``my_images/`` (its images by class)."""
    from tfpathloader.tools.demo import make_demo

    base = tmp_path_factory.mktemp("docs-template")
    make_demo(base / "data", per_label=5, test_per_label=2, progress=False)
    shutil.copytree(base / "data" / "train", base / "my_images")
    return base


class Page:
    """One page's folder and namespace, shared by its blocks in order."""

    def __init__(self, folder: str):
        self.folder = folder
        self.namespace: dict = {"__name__": "__docs__"}

    def close(self) -> None:
        from tfpathloader.load.base import Loader

        for value in list(self.namespace.values()):
            if isinstance(value, Loader):
                value.close()
        self.namespace.clear()


_PAGES: dict[str, Page] = {}


_LAST = {b.page: b.line for b in RUN}  # a page's last code block (blocks are in order)


@pytest.fixture
def page_of(tiny_template, tmp_path_factory):
    def get(block: Block) -> Page:
        if block.page not in _PAGES:
            folder = tmp_path_factory.mktemp(re.sub(r"\W+", "-", block.page))
            shutil.copytree(tiny_template, folder, dirs_exist_ok=True)
            _PAGES[block.page] = Page(str(folder))
        return _PAGES[block.page]

    return get


def _env() -> dict[str, str]:
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONPATH": ROOT, "MPLBACKEND": "Agg"}


# --------------------------------------------------------------------------- running


def tiny_bash(code: str) -> str:
    """A bash block as the test runs it: training tiny, the demo small (see the module doc)."""
    out = []
    for line in code.splitlines():
        text, _, comment = line.partition(" #")
        words = text.split()
        if words[:2] == ["tfpathloader", "demo"] and "--per-label" not in words:
            text += " --per-label 5 --test-per-label 2"
        if "train.py" in words:
            at = words.index("train.py")
            words[at] = os.path.join(ROOT, "train.py")
            given = {w.split("=", 1)[0] for w in words[at + 1 :] if "=" in w}
            words += [f"{k}={v}" for k, v in _TINY_TRAIN.items() if k not in given]
            words = [
                f"{w.split('=', 1)[0]}={_TINY_TRAIN[w.split('=', 1)[0]]}"
                if "=" in w and w.split("=", 1)[0] in _TINY_TRAIN
                else w
                for w in words
            ]
            text = " ".join(words)
        out.append(f"{text} #{comment}" if comment else text)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(
    "block", [pytest.param(b, id=b.id, marks=_marks(b)) for b in RUN]
)  # fmt: skip
def test_code_block_runs(block: Block, page_of):
    try:
        _run(block, page_of)
    finally:
        if block.line == _LAST[block.page] and block.page in _PAGES:
            _PAGES.pop(block.page).close()  # the page's loaders (and workers) go now


def _run(block: Block, page_of) -> None:
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    page = page_of(block)
    if block.lang == "bash":
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", tiny_bash(block.code)],
            cwd=page.folder,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        out = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert done.returncode == 0, f"{block.id} failed:\n{out}"
        return
    if block.fresh:
        done = subprocess.run(
            [sys.executable, "-c", block.code],
            cwd=page.folder,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{block.id} failed:\n{done.stderr[-3000:]}"
        return
    old = os.getcwd()
    os.chdir(page.folder)
    try:
        exec(compile(block.code, block.id, "exec"), page.namespace)
    finally:
        os.chdir(old)


def test_tiny_bash_keeps_commands_and_shrinks_training():
    code = "python train.py -m loader=torch,tf trainer.max_steps=200  # a sweep\ntfpathloader demo data\n"
    out = tiny_bash(code).splitlines()
    assert out[0].startswith(f"python {os.path.join(ROOT, 'train.py')} -m loader=torch,tf")
    assert "trainer.max_steps=2 " in out[0] + " " and "trainer.max_steps=200" not in out[0]
    assert out[0].endswith("# a sweep")
    assert out[1] == "tfpathloader demo data --per-label 5 --test-per-label 2"

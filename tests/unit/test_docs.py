"""docs/make_docs.py: the README's measured numbers sit in marked blocks the script can remake."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def make_docs():
    spec = importlib.util.spec_from_file_location(
        "make_docs", os.path.join(ROOT, "docs", "make_docs.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_docs"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_blocks_exist_and_check_parses(make_docs, capsys):
    assert make_docs.main(["--check"]) == 0
    where = make_docs.locate(make_docs.doc_files())
    assert set(where) == set(make_docs.BLOCKS)
    for name, path in where.items():
        with open(path) as f:
            assert make_docs.parse(f.read())[name].strip(), name
    assert "ok: " in capsys.readouterr().out
    # The README's headline table and the accuracy its first command prints stay in it.
    assert where["bench"].endswith("README.md") and where["accuracy"].endswith("README.md")


def test_check_fails_on_a_broken_a_missing_or_a_doubled_block(make_docs, tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    docs = [p for p in make_docs.doc_files() if not p.endswith("README.md")]
    broken = tmp_path / "README.md"
    broken.write_text(text.replace("<!-- /docs:accuracy -->", "", 1))
    assert make_docs.main(["--check", "--files", str(broken), *docs]) == 1
    broken.write_text(
        text.replace("<!-- docs:bench -->", "", 1).replace("<!-- /docs:bench -->", "")
    )
    with pytest.raises(ValueError, match="'bench': missing"):
        make_docs.locate([str(broken), *docs])
    doubled = tmp_path / "extra.md"
    doubled.write_text("<!-- docs:bench -->\nx\n<!-- /docs:bench -->\n")
    with pytest.raises(ValueError, match="'bench': in both"):
        make_docs.locate([os.path.join(ROOT, "README.md"), *docs, str(doubled)])


def test_replace_stamps_the_command_and_keeps_the_rest(make_docs):
    text = "a\n<!-- docs:audit -->\nold\n<!-- /docs:audit -->\nb\n"
    for name in make_docs.BLOCKS:
        if name != "audit":
            text += f"<!-- docs:{name} -->\nx\n<!-- /docs:{name} -->\n"
    new = make_docs.replace(text, "audit", "| new |\n")
    body = make_docs.parse(new)["audit"]
    assert body.startswith("| new |\n<!-- made by `python docs/make_docs.py --only audit`")
    assert new.startswith("a\n") and "\nb\n" in new and "old" not in new


def test_tables_come_from_the_commands_json(make_docs):
    audit = {
        "global": {
            "spearman_z": 0.31,
            "chi2_p": 0.98,
            "ks_p": 1.0,
            "label_first_draw": {"0": 1, "1": 3, "2": 5},
            "missing_labels": [],
        },
        "buffer (10,000)": {
            "spearman_z": 191.0,
            "chi2_p": 0.0,
            "ks_p": 0.0,
            "label_first_draw": {"0": 1, "1": 2, "2": None},
            "missing_labels": ["2"],
        },
    }
    table = make_docs.audit_table(audit, draws=50000).splitlines()
    assert table[2] == "| global | +0.3 | 0.98 | 1 | draw 5 | draw 5 | - |"
    assert table[3] == "| buffer (10,000) | +191.0 | 0 | 0 | never | never | 2 |"
    row = {"images_per_s": 9598.0, "ratio_to_raw": 1.0, "cpu_ms_per_image": 0.07}
    fast = {"images_per_s": 10942.0, "ratio_to_raw": 1.14, "cpu_ms_per_image": 0.061}
    res = {
        "images": 100,
        "workers": 2,
        "batch_size": 256,
        "repeat": 5,
        "cpu_count": 2,
        "rows": {"raw": row, "tf": fast, "grain": {"skipped": "no grain"}},
    }
    bench = make_docs.bench_table({"demo-png": res, "photos-crop": res}).splitlines()
    assert bench[2].startswith("| row | demo PNG 28x28 (100) | photos -> RandomResizedCrop")
    assert "| raw: Pillow decode, N processes | 1.00 / 0.07 | 1.00 / 0.07 |" in bench
    assert "| **tfpathloader, tf** | 1.14 / 0.06 | 1.14 / 0.06 |" in bench
    assert "| Grain MapDataset + mp_prefetch | skipped | skipped |" in bench
    assert "| **tfpathloader, torch** | - | - |" in bench


def test_the_accuracy_block_runs_plain_train_py(make_docs):
    # What the README quotes is what a fresh `python train.py` prints, not a sweep's run.
    assert make_docs.BLOCKS["accuracy"].command == "python train.py"


# --------------------------------------------------------------------------- extras


def _extras() -> dict[str, list[str]]:
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def _expand(extras: dict[str, list[str]], name: str) -> set[str]:
    """The requirements an extra installs, its tfpathloader[...] extras expanded."""
    out: set[str] = set()
    for req in extras[name]:
        if req.startswith("tfpathloader["):
            for inner in req[len("tfpathloader[") : req.index("]")].split(","):
                out |= _expand(extras, inner.strip())
        else:
            out.add(req)
    return out


def test_all_installs_every_optional_part():
    extras = _extras()
    everything = _expand(extras, "all")
    tooling = {"all", "test", "docs", "bench", "tf-cpu"}  # tf-cpu: the same part as tf
    for name in set(extras) - tooling:
        missing = _expand(extras, name) - everything
        assert not missing, f"extra {name!r} installs {sorted(missing)}, which [all] does not"
    names = {r.split(">")[0].split(";")[0].strip() for r in everything}
    assert {"tfrecord", "obstore", "tensorflow", "torch", "hydra-core"} <= names


def test_docs_extra_has_what_the_site_needs():
    names = {r.split(">")[0] for r in _extras()["docs"]}
    assert names == {"sphinx", "myst-parser", "furo"}


# --------------------------------------------------------------------------- generated pages


@pytest.fixture(scope="module")
def tfpl_docs():
    sys.path.insert(0, os.path.join(ROOT, "docs", "_ext"))
    import tfpl_docs

    return tfpl_docs


def test_every_make_loader_argument_has_a_default_meaning_and_backends(tfpl_docs):
    import inspect

    from tfpathloader import make_loader

    args = tfpl_docs.loader_arguments()
    assert [a.name for a in args] == list(inspect.signature(make_loader).parameters)
    assert all(a.meaning for a in args), [a.name for a in args if not a.meaning]
    page = tfpl_docs.make_loader_page()
    assert "| `max_file_bytes` | `268435456` (256 MiB) |" in page
    assert "| `shuffle` | `None` | torch, tf |" in page


def test_the_backends_column_says_what_make_loader_refuses(tfpl_docs, image_dir):
    from tfpathloader import make_loader

    _, index = image_dir
    # A value other than the default for every argument the table calls torch-only.
    probes = {"decode_on": "device"}
    torch_only = {a.name for a in tfpl_docs.loader_arguments() if a.backends != "torch, tf"}
    assert torch_only == set(probes)
    for name, value in probes.items():
        with pytest.raises(ValueError, match=r"torch|backend"):
            make_loader(index=index, batch_size=4, backend="tf", num_workers=1, **{name: value})


def test_the_cli_page_has_every_command(tfpl_docs):
    page = tfpl_docs.cli_page()
    for command in ("demo", "index build", "index info", "index verify", "audit"):
        assert f"`tfpathloader {command}`" in page
    assert "--max-file-bytes" in page


def test_the_hydra_page_has_every_group_and_key(tfpl_docs):
    page = tfpl_docs.hydra_page()
    for group in ("loader", "shuffle", "data", "model", "optimizer", "schedule", "trainer"):
        assert f"## `{group}`:" in page
    for key in ("trainer.collective_timeout_s", "loader.num_workers", "shuffle.buffer_size"):
        assert f"`{key}`" in page


def test_the_design_notes_hold_each_note_once_in_full(tfpl_docs):
    notes = tfpl_docs.all_notes()
    where = {(n.topic, n.path) for n in notes}
    assert len(where) == len(notes)
    topics = {n.topic for n in notes}
    assert {"tail rule", "one decode path", "worker death", "bench method"} <= topics
    tail = next(n for n in notes if n.topic == "tail rule")
    assert tail.path == os.path.join("tfpathloader", "order", "layout.py")
    assert "drop_last=False" in tail.text and "DistributedSampler" in tail.text


def test_relative_links_in_the_readme_and_docs_lead_to_files(make_docs):
    import re

    broken = []
    for page in make_docs.doc_files():
        with open(page) as f:
            text = re.sub(r"```.*?```", "", f.read(), flags=re.S)  # not inside code
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = os.path.join(os.path.dirname(page), target.split("#")[0])
            if not os.path.exists(path):
                broken.append(f"{os.path.relpath(page, ROOT)}: {target}")
    assert not broken, broken

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


def test_readme_blocks_exist_and_check_parses(make_docs, capsys):
    assert make_docs.main(["--check"]) == 0
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = make_docs.parse(f.read())
    assert set(blocks) == set(make_docs.BLOCKS)
    assert all(body.strip() for body in blocks.values())
    assert "ok: " in capsys.readouterr().out


def test_check_fails_on_a_broken_or_missing_block(make_docs, tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    broken = tmp_path / "README.md"
    broken.write_text(text.replace("<!-- /docs:audit -->", "", 1))
    assert make_docs.main(["--check", "--readme", str(broken)]) == 1
    broken.write_text(
        text.replace("<!-- docs:sweep -->", "", 1).replace("<!-- /docs:sweep -->", "")
    )
    with pytest.raises(ValueError, match="'sweep': missing"):
        make_docs.parse(broken.read_text())


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

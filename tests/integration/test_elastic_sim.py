"""The elastic-resume simulation runs and finds the epoch exactly once (small size, subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_simulation_over_three_layouts_is_exactly_once(tmp_path):
    out = tmp_path / "sim.json"
    script = os.path.join(ROOT, "benchmarks", "elastic_100m.py")
    args = ["--records", "200003", "--ranks", "32", "--workers", "3", "--json", str(out)]
    result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["exactly_once"] and got["never_delivered"] == 0
    assert got["delivered_twice"] == got["tail_padding_allowed"]
    assert [p["ranks"] for p in got["phases"]] == [32, 24, 48]
    assert 0 < got["phases"][1]["resumed_at"] < got["phases"][2]["resumed_at"] < 200003

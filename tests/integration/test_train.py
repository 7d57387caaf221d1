"""train.py: Hydra composition, both loaders, metrics.json, sweeps, distributed, kill-and-resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

sys.path.insert(0, ROOT)
import train
from tfpathloader.tools.audit import AUDIT_KEYS
from tfpathloader.tools.demo import make_demo
from train_app.compare import main as compare_main
from train_app.errors import RunConfigError

CONF = os.path.join(ROOT, "conf")
METRICS_KEYS = {"test_accuracy", "per_class_accuracy", "images_per_s", "steps", "samples", "audit"}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_demo(root, per_label=24, test_per_label=3, progress=False)
    return root


def compose_cfg(overrides):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}


@pytest.mark.parametrize("loader", ["torch", "tf"])
@pytest.mark.parametrize("shuffle", ["global", "buffer"])
def test_each_loader_trains_a_few_steps(small_data, tmp_path, loader, shuffle):
    cfg = compose_cfg(
        [
            f"loader={loader}",
            f"shuffle={shuffle}",
            f"data.root={small_data}",
            "trainer.max_steps=4",
            "trainer.progress=false",
            "loader.batch_size=16",
        ]
    )
    metrics = train.train(cfg, out_dir=str(tmp_path))
    assert set(metrics) >= METRICS_KEYS
    assert set(AUDIT_KEYS) <= set(metrics["audit"])
    assert metrics["steps"] == 4 and metrics["samples"] == 64
    assert metrics["audit"]["draws"] == 64 and metrics["audit"]["duplicates"] == 0
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and len(metrics["per_class_accuracy"]) == 10
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["test_accuracy"] == metrics["test_accuracy"]
    for fig in ("training.png", "audit.png"):
        assert (tmp_path / fig).read_bytes()[:4] == b"\x89PNG"


def test_same_config_same_training_in_both_backends(small_data, tmp_path):
    out = {}
    for loader in ("torch", "tf"):
        cfg = compose_cfg(
            [
                f"loader={loader}",
                f"data.root={small_data}",
                "trainer.progress=false",
                "loader.batch_size=16",
                "trainer.max_steps=6",
            ]
        )
        out[loader] = train.train(cfg, out_dir=str(tmp_path / loader))
    assert out["torch"]["audit"]["label_counts"] == out["tf"]["audit"]["label_counts"]
    assert out["torch"]["train_loss_last100"] == pytest.approx(
        out["tf"]["train_loss_last100"], rel=1e-5
    )


def test_makes_the_demo_data_only_where_asked(tmp_path):
    root = tmp_path / "fresh"
    plain = compose_cfg([f"data.root={root}", "trainer.progress=false"])
    with pytest.raises(RunConfigError, match=r"data\.make_demo_if_missing=true"):
        train.train(plain, out_dir=str(tmp_path / "refused"))
    assert not root.exists()
    cfg = compose_cfg(
        [
            f"data.root={root}",
            "data.make_demo_if_missing=true",
            "data.per_label=5",
            "trainer.max_steps=1",
            "trainer.progress=false",
            "loader.num_workers=0",
        ]
    )
    metrics = train.train(cfg, out_dir=str(tmp_path / "run"))
    assert (root / "index.tfrecord").exists() and (root / "demo.json").exists()
    assert metrics["steps"] == 1


def test_trains_on_its_own_index_with_a_held_out_part(tmp_path):
    from conftest import make_images

    from tfpathloader import build_index

    make_images(tmp_path / "imgs", 40, classes=4, size=(12, 12))
    build_index(str(tmp_path / "imgs"), None, progress=False)
    cfg = compose_cfg(
        [
            f"data.root={tmp_path / 'imgs'}",
            "data.holdout=0.3",
            "trainer.max_steps=2",
            "trainer.progress=false",
            "loader.batch_size=8",
            "loader.num_workers=0",
        ]
    )
    metrics = train.train(cfg, out_dir=str(tmp_path / "run"))
    evaluation = metrics["data"]["evaluation"]
    assert evaluation["kind"] == "held out" and evaluation["records"] == 12
    assert metrics["test_samples"] == 12 and metrics["data"]["train_records"] == 28
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["held_out_ids"]) == 12


def test_a_user_error_is_one_line_per_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = compose_cfg([f"data.root={tmp_path / 'empty'}", "trainer.epochs=0"])
    with pytest.raises(RunConfigError) as e:
        train.train(cfg, out_dir=str(tmp_path / "run"))
    assert e.value.problems == ["trainer.epochs=0: must be >= 1 (one pass over the data at least)"]
    cfg = compose_cfg([f"data.root={tmp_path / 'empty'}"])
    with pytest.raises(RunConfigError, match="holds no path index") as e:
        train.train(cfg, out_dir=str(tmp_path / "run"))
    assert len(e.value.problems) == 1 and os.listdir(tmp_path / "empty") == []


@pytest.mark.slow
def test_user_errors_exit_2_without_a_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in ([f"data.root={tmp_path / 'empty'}"], ["trainer.max_steps=0"]):
        result = subprocess.run(
            [sys.executable, "train.py", *args, f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "train.py: error: " in result.stderr


def test_config_is_validated():
    with pytest.raises((ValidationError, ConfigCompositionException)):
        compose_cfg(["loader.batch_size=lots"])
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["loader=jax"])
    with pytest.raises((ValidationError, ConfigCompositionException)):
        compose_cfg(["trainer.epochz=2"])


def test_ranks_of_one_torchrun_launch_name_one_run_folder():
    """The default run folder comes from the launcher's start time under torchrun, not `now`."""
    code = "from train_app.config import launch_time; print(launch_time('%d/%H-%M-%S'))"
    plain = {k: v for k, v in env().items() if k != "LOCAL_RANK"}

    def two_processes_a_second_apart(extra):
        out = []
        for _ in range(2):
            run = subprocess.run(
                [sys.executable, "-c", code], env={**plain, **extra}, capture_output=True, text=True
            )
            assert run.returncode == 0, run.stderr
            out.append(run.stdout.strip())
            time.sleep(1.1)
        return out

    # Two ranks of one launch (children of this process): one folder name.
    a, b = two_processes_a_second_apart({"LOCAL_RANK": "0"})
    assert a == b
    # Two separate runs: `now`, as Hydra's default.
    a, b = two_processes_a_second_apart({})
    assert a != b


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["torch", "tf"])
def test_two_process_distributed_run_covers_the_data_once(small_data, tmp_path, loader):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port",
        str(29500 + os.getpid() % 1000 + (loader == "tf")),
        "train.py",
        "trainer.distributed=true",
        f"loader={loader}",
        f"data.root={small_data}",
        f"hydra.run.dir={run}",
        "trainer.progress=false",
        "loader.batch_size=8",
        "loader.num_workers=1",
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["exactly_once"] is True
    assert m["samples"] == 240 and m["audit"]["unique"] == 240 and m["audit"]["duplicates"] == 0
    assert m["steps"] == 15  # 240 records / (8 per rank x 2 ranks)


SLOW_STEPS = """
import runpy, sys, time, torch
real_step = torch.optim.Adam.step
def slow_step(self, *a, **k):
    time.sleep(0.05)  # slow enough to be killed mid-epoch
    return real_step(self, *a, **k)
torch.optim.Adam.step = slow_step
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def run_killed_at(small_data, run, kill_steps, loader="torch", extra=()):
    """Kill the run with SIGKILL soon after each checkpoint in ``kill_steps``, then finish it."""
    args = [
        f"data.root={small_data}",
        f"hydra.run.dir={run}",
        "trainer.progress=false",
        "loader.batch_size=4",
        "trainer.checkpoint_every=5",
        f"loader={loader}",
        *extra,
    ]
    for n, step in enumerate(kill_steps):
        resume = ["trainer.resume=auto"] if n else []
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_STEPS, *args, *resume],
            cwd=ROOT,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 120
        target = run / "checkpoints" / f"step-{step:08d}.pt"
        while not target.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline
            time.sleep(0.02)
        time.sleep(0.12)  # a couple more steps past the checkpoint, then the kill
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert not (run / "metrics.json").exists()
    resumed = subprocess.run(
        [sys.executable, "train.py", *args, "trainer.resume=auto"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loader", "kill_steps", "extra"),
    [
        ("torch", [5], ()),  # early
        ("torch", [30], ()),  # mid-epoch
        ("torch", [55], ()),  # near the end
        ("torch", [10, 35], ()),  # killed twice
        ("tf", [20], ()),
        ("torch", [25, 70], ("trainer.epochs=2",)),  # across an epoch boundary
    ],
)
def test_kill_and_resume_loses_nothing(small_data, tmp_path, loader, kill_steps, extra):
    m = run_killed_at(small_data, tmp_path / "run", kill_steps, loader=loader, extra=extra)
    epochs = 2 if extra else 1
    assert m["resume"]["resumed"] is True and m["resume"]["from_step"] >= kill_steps[-1]
    assert m["resume"]["runs"] == len(kill_steps) + 1
    assert m["resume"]["samples_lost"] == 0 and m["resume"]["samples_repeated"] == 0
    assert m["exactly_once"] is True
    assert m["samples"] == 240 * epochs and m["steps"] == 60 * epochs
    for audit in m["audit_epochs"]:
        assert audit["unique"] == 240 and audit["duplicates"] == 0 and audit["complete_epoch"]


def _kill_tree(pid):
    """SIGKILL a process and all its descendants, the deepest first."""
    from procstats import descendants

    for p in reversed(descendants(pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _launch(script, nproc, args, port):
    """python SCRIPT args, under torchrun when nproc > 1, in its own process group."""
    if nproc == 1:
        cmd = [sys.executable, script, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_port", str(port), script, "trainer.distributed=true", *args]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "launches",
    [
        # (ranks, extra args, killed soon after the checkpoint of this step; None: run to the end)
        [(2, (), 10), (1, (), 20), (3, (), None)],  # 2 ranks -> 1 -> 3
        [(2, (), 10), (1, ("loader.batch_size=6",), None)],  # and another batch size
    ],
)
def test_killed_under_torchrun_resumes_on_other_world_sizes_exactly_once(
    small_data, tmp_path, launches
):
    run = tmp_path / "run"
    slow = tmp_path / "slow_train.py"
    slow.write_text(SLOW_STEPS)
    base = [f"data.root={small_data}", f"hydra.run.dir={run}", "trainer.progress=false",
            "loader.batch_size=4", "loader.num_workers=1", "trainer.checkpoint_every=5"]  # fmt: skip
    port = 29600 + os.getpid() % 300
    for n, (ranks, extra, kill_step) in enumerate(launches):
        resume = ["trainer.resume=auto"] if n else []
        proc = _launch(str(slow), ranks, [*base, *extra, *resume], port + n)
        if kill_step is None:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err.decode()[-3000:]
            break
        target = run / "checkpoints" / f"step-{kill_step:08d}.pt"
        deadline = time.time() + 300
        while not target.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.1)
        _kill_tree(proc.pid)  # the launcher and every rank (torchrun starts ranks in sessions
        proc.wait(timeout=30)  # of their own, so a process group would miss them)
        assert not (run / "metrics.json").exists()
    m = json.loads((run / "metrics.json").read_text())
    assert m["resume"]["runs"] == len(launches) and m["world_size"] == launches[-1][0]
    assert m["resume"]["samples_lost"] == 0 and m["resume"]["samples_repeated"] == 0
    assert m["exactly_once"] is True
    audit = m["audit_epochs"][0]
    assert audit["complete_epoch"] and audit["unique"] == 240 and audit["duplicates"] == 0
    assert len(os.listdir(run / "checkpoints")) == 1  # one file, whatever the world size


@pytest.mark.slow
def test_sweep_and_compare(small_data, tmp_path, capsys):
    sweep = tmp_path / "multirun"
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "loader=torch,tf",
        "shuffle=global,buffer",
        f"data.root={small_data}",
        f"hydra.sweep.dir={sweep}",
        "trainer.max_steps=3",
        "trainer.progress=false",
        "loader.batch_size=16",
        "shuffle.buffer_size=20",
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert compare_main([str(sweep)]) == 0
    table = capsys.readouterr().out
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "test acc" not in ln]
    assert len(rows) == 4
    assert {r.split(" | ")[1] for r in rows} == {
        "torch / global",
        "torch / buffer (20)",
        "tf / global",
        "tf / buffer (20)",
    }
    assert (sweep / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((sweep / "comparison.json").read_text())["runs"]
    assert len(summary) == 4 and all(np.isfinite(r["test_accuracy"]) for r in summary)


def test_a_bad_loader_jpeg_dct_is_a_config_error_naming_the_valid_ones(small_data, tmp_path):
    cfg = compose_cfg([f"data.root={small_data}", "loader.jpeg_dct=ifast", "trainer.max_steps=1"])
    with pytest.raises(RunConfigError, match=r"loader/shuffle: unknown jpeg_dct 'ifast'.*fast"):
        train.train(cfg, out_dir=str(tmp_path / "run"))


def _rank_workers(launcher: int, rank: int) -> list[int]:
    """The loader workers of one rank of a torchrun launch: children of the rank's process."""
    from procstats import children, descendants

    for pid in descendants(launcher):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env_ = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if env_.get(b"RANK") == str(rank).encode() and b"LOCAL_RANK" in env_:
            kids = children(pid)
            if kids:
                return kids
    return []


@pytest.mark.slow
def test_a_rank_whose_worker_dies_ends_the_job_and_it_resumes_exactly_once(small_data, tmp_path):
    """Issue 23: a loader worker of rank 1 is killed mid-step under torchrun. Rank 1 prints the
    one-line error and the resume command; the job ends (torchrun stops rank 0, or its
    collective times out: trainer.collective_timeout_s); the resume loses and repeats nothing."""
    run = tmp_path / "run"
    slow = tmp_path / "slow_train.py"
    slow.write_text(SLOW_STEPS)
    args = [f"data.root={small_data}", f"hydra.run.dir={run}", "trainer.progress=false",
            "loader.batch_size=4", "loader.num_workers=1", "trainer.checkpoint_every=5",
            "trainer.collective_timeout_s=30"]  # fmt: skip
    port = 29900 + os.getpid() % 90
    proc = _launch(str(slow), 2, args, port)
    target = run / "checkpoints" / f"step-{10:08d}.pt"
    deadline = time.time() + 300
    while not target.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    workers = _rank_workers(proc.pid, 1)
    assert workers, "no loader worker found under rank 1"
    t_kill = time.monotonic()
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - t_kill
    text = err.decode()
    assert proc.returncode != 0
    assert "train.py: error: LoaderWorkerError: loader worker 0" in text, text[-3000:]
    assert f"python train.py hydra.run.dir={run} trainer.resume=auto" in text
    assert took < 30 + 15, took  # within the collective timeout (torchrun is quicker)
    print(f"torchrun job ended {took:.1f} s after the kill")
    resumed = _launch(str(slow), 2, [*args, "trainer.resume=auto"], port + 1)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["resume"]["samples_lost"] == 0 and m["resume"]["samples_repeated"] == 0
    assert m["exactly_once"] is True and m["audit_epochs"][0]["unique"] == 240

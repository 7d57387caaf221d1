"""Train a small CNN on a path index with either loader, then audit the order it trained on.

    python train.py                                        # demo data, torch loader, global shuffle
    python train.py data.root=IMAGES                       # your own index (index build IMAGES)
    python train.py loader=tf shuffle=buffer               # tf.data loader, biased buffer shuffle
    python train.py -m loader=torch,tf shuffle=global,buffer   # then python -m train_app.compare
    torchrun --nproc_per_node=2 train.py trainer.distributed=true
    python train.py hydra.run.dir=outputs/run1 trainer.resume=auto    # resume a killed run

A run is five steps: :func:`set_up` (config, data, loader, model), :func:`fit`,
:func:`evaluate_and_audit`, and :func:`report` (``metrics.json``, ``training.png``,
``audit.png`` in the run folder). A user's mistake (no index, a bad value) is a
:class:`~train_app.errors.RunConfigError`, printed one line per problem (exit status 2). Only
this file and ``train_app/config.py`` know Hydra; everything else takes plain arguments.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf

from tfpathloader._tf import quiet_tensorflow_logs
from tfpathloader.errors import TFPathLoaderError
from tfpathloader.storage import is_url
from tfpathloader.tools.audit import audit_figure
from tfpathloader.tools.demo import make_demo
from train_app.checkpoints import (
    checkpoint_payload,
    find_checkpoint,
    load_checkpoint,
    restore,
    save_checkpoint,
)
from train_app.config import register_configs, validate
from train_app.data import DEFAULT_ROOT, RunData, obtain_index, prepare_data, write_split
from train_app.dist import Dist, pick_device
from train_app.errors import LoaderFault, RunConfigError
from train_app.evaluation import audit_epochs, epoch_sequences, evaluate
from train_app.figures import training_figure
from train_app.models import to_input

log = logging.getLogger("train")
register_configs()


@dataclass
class Run:
    """Everything a run holds between its steps."""

    cfg: DictConfig
    dist: Dist
    folder: str
    device: torch.device
    data: RunData
    loader: Any
    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    total_steps: int
    step: int = 0
    losses: list[float] = field(default_factory=list)
    accs: list[float] = field(default_factory=list)
    epoch_starts: list[int] = field(default_factory=list)
    trained: dict[int, list[np.ndarray]] = field(default_factory=dict)  # this run, this rank
    history: dict[int, np.ndarray] = field(default_factory=dict)  # earlier runs, all ranks
    tails: dict[int, dict[str, int]] = field(default_factory=dict)  # epochs finished
    resume: dict[str, Any] = field(default_factory=lambda: {"resumed": False})
    samples: int = 0
    train_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)


# --------------------------------------------------------------------------- set-up


def set_up(cfg: DictConfig, dist: Dist, out_dir: str | None = None) -> Run:
    """Check the config and the data, then build loader, model, optimizer and schedule.

    Raises:
        RunConfigError: for every problem found before the first step.
    """
    folder = dist.broadcast(_run_dir(out_dir) if dist.rank == 0 else None)
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.trainer.device, dist)
    data = load_data(cfg, dist)
    size = tuple(cfg.data.size) if cfg.data.size is not None else None
    try:
        # The shuffle group is a partial OrderSpec; the batch size it takes is loader.batch_size.
        unused: dict[str, Any] = {}
        if cfg.shuffle.shuffle != "buffer" and cfg.shuffle.buffer_size:
            # A sweep's shuffle.buffer_size=K reaches every shuffle choice: said, then unused.
            log.info("shuffle.buffer_size is not used by shuffle=%s", cfg.shuffle.shuffle)
            unused["buffer_size"] = None
        order = instantiate(cfg.shuffle)(
            seed=cfg.seed, batch_size=cfg.loader.batch_size, world_size=dist.world_size, **unused
        )
        loader_cfg = OmegaConf.to_container(cfg.loader, resolve=True)
        del loader_cfg["batch_size"]  # type: ignore[arg-type,union-attr]  # in the order spec
        # Partial, then called: instantiate would turn the OrderSpec passed to it into a dict.
        make = instantiate(loader_cfg, _partial_=True)
        loader = make(index=data.train, order=order, rank=dist.rank, channels=cfg.data.channels,
                      size=size)  # fmt: skip
    except InstantiationException as e:  # a config that does not fit make_loader at all
        raise RunConfigError(f"loader/shuffle: {e.__cause__ or e}") from e
    except ValueError as e:  # OrderSpec's and make_loader's checks, naming the valid values
        raise RunConfigError(f"loader/shuffle: {e}") from e
    model = instantiate(
        cfg.model, channels=loader.config.channels, num_classes=data.train.num_classes
    )
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    total = len(loader) * cfg.trainer.epochs
    if cfg.trainer.max_steps is not None:
        total = min(total, cfg.trainer.max_steps)
    schedule = instantiate(cfg.schedule)(optimizer, total_steps=max(1, total))
    net: torch.nn.Module = model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None
        )
    run = Run(cfg, dist, folder, device, data, loader, model, net, optimizer, schedule, total)
    if cfg.trainer.resume:
        _resume(run)
    return run


def load_data(cfg: DictConfig, dist: Dist) -> RunData:
    """The index (rank 0 makes the demo where allowed), checked, with its evaluation part."""
    if is_url(cfg.data.root):  # s3://, https://...: read where it is, never made there
        root = str(cfg.data.root).rstrip("/")
        path = f"{root}/{cfg.data.index}"
    else:
        root = to_absolute_path(cfg.data.root)
        path = obtain_index(
            root,
            cfg.data.index,
            default_root=os.path.normpath(cfg.data.root) == DEFAULT_ROOT,
            make_demo=cfg.data.make_demo_if_missing,
            demo=lambda: make_demo(
                root, per_label=cfg.data.per_label, seed=cfg.seed, progress=cfg.trainer.progress
            ),
            dist=dist,
        )
    test_index = cfg.data.test_index
    if test_index not in (None, "auto"):
        test_index = to_absolute_path(os.path.join(root, test_index))
    data = prepare_data(
        path=path,
        root=root,
        test_index=test_index,
        holdout=cfg.data.holdout,
        seed=cfg.seed,
        size=tuple(cfg.data.size) if cfg.data.size is not None else None,
        batch_size=cfg.loader.batch_size,
        drop_last=cfg.shuffle.drop_last,
        world_size=dist.world_size,
    )
    ev = data.summary["evaluation"]
    if ev["kind"] == "held out":
        log.info(
            "no test index: holding out %d of %d records (%.0f%% of every label, seed %d) "
            "for evaluation, never trained on",
            ev["records"],
            data.summary["records"],
            100 * ev["fraction"],
            ev["seed"],
        )
    return data


def _resume(run: Run) -> None:
    cfg, dist = run.cfg, run.dist
    where = cfg.trainer.resume
    if where not in ("auto", "true", "True"):
        where = to_absolute_path(where)
    path = find_checkpoint(where, run.folder, dist)
    if path is None:
        log.warning("trainer.resume=%s: no checkpoint in %s; starting fresh", where, run.folder)
        return
    restore(run, load_checkpoint(path, run.device), path)
    # The steps left, counted under this run's layout (it may differ from the saved one:
    # another world size or batch size, NOTE [elastic checkpoints]).
    left = run.loader.batches_left + len(run.loader) * (cfg.trainer.epochs - run.loader.epoch - 1)
    run.total_steps = run.step + max(0, left)
    if cfg.trainer.max_steps is not None:
        run.total_steps = min(run.total_steps, cfg.trainer.max_steps)
    log.info(
        "resumed from %s (step %d, epoch %d, %d batches into it)",
        path,
        run.step,
        run.loader.epoch,
        run.loader.batches_consumed,
    )


def _run_dir(out_dir: str | None) -> str:
    if out_dir is None:
        out_dir = HydraConfig.get().runtime.output_dir
    os.makedirs(out_dir, exist_ok=True)
    return out_dir


# --------------------------------------------------------------------------- fit


def fit(run: Run) -> None:
    """The training loop: epochs of the loader's batches, checkpoints, early stop."""
    cfg, loader = run.cfg, run.loader
    show = cfg.trainer.progress and run.dist.rank == 0
    from tqdm.auto import tqdm

    bar = tqdm(
        total=run.total_steps,
        initial=run.step,
        disable=not show,
        dynamic_ncols=True,
        desc=f"{cfg.loader.backend}/{cfg.shuffle.shuffle}",
    )
    start_epoch = loader.epoch if run.resume["resumed"] else 0
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.trainer.epochs):
        if not (run.resume["resumed"] and epoch == start_epoch):
            loader.set_epoch(epoch)
            if epoch > 0:
                run.epoch_starts.append(run.step + 1)
        batches = run.trained.setdefault(epoch, [])
        for batch in loader:
            _step(run, batch)
            batches.append(batch["index"].cpu().numpy().copy())
            if loader.batches_left == 0:  # the epoch's tail, under the layout that finished it
                layout = loader.sampler.layout
                run.tails[epoch] = {"padding": layout.padding, "dropped": layout.dropped}
            if show:
                rate = run.samples * run.dist.world_size / max(1e-9, time.perf_counter() - t0)
                bar.set_postfix(loss=f"{run.losses[-1]:.3f}", img_s=f"{rate:,.0f}", refresh=False)
                bar.update(1)
            if cfg.trainer.checkpoint_every and run.step % cfg.trainer.checkpoint_every == 0:
                _checkpoint(run)
            if run.step >= run.total_steps:
                break
        if run.step >= run.total_steps:
            break
    run.train_seconds = time.perf_counter() - t0
    bar.close()
    if hasattr(loader, "close"):
        loader.close()


def _step(run: Run, batch: dict[str, torch.Tensor]) -> None:
    x = to_input(batch["image"].to(run.device, non_blocking=True))
    y = batch["label"].to(run.device, non_blocking=True)
    logits = run.net(x)
    loss = F.cross_entropy(logits, y)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.schedule.step()
    run.samples += len(y)
    run.step += 1
    run.losses.append(loss.item())
    run.accs.append(float((logits.argmax(1) == y).float().mean()))


def _checkpoint(run: Run) -> None:
    payload = checkpoint_payload(run)  # every rank gathers; rank 0 gets it
    save_checkpoint(run.folder, run.dist, payload if payload is not None else {"step": run.step})


# --------------------------------------------------------------------------- evaluate, audit


def evaluate_and_audit(run: Run) -> dict[str, Any]:
    """Accuracy on the evaluation index and the audit of every epoch trained (on rank 0)."""
    all_trained = run.dist.gather(run.trained)
    rates = run.dist.gather(run.samples / max(1e-9, run.train_seconds))
    if run.dist.rank != 0:
        return {}
    cfg = run.cfg
    size = tuple(cfg.data.size) if cfg.data.size is not None else None
    metrics = evaluate(
        run.model,
        run.data.test,
        device=run.device,
        batch_size=cfg.trainer.eval_batch_size,
        channels=run.loader.config.channels,
        size=size,
    )
    audits, sequences, exactly_once = audit_epochs(
        epoch_sequences(run.history, all_trained), run.data.train, run.tails
    )
    run.resume["samples_lost"] = sum(a.get("samples_lost", 0) for a in audits)
    run.resume["samples_repeated"] = sum(a.get("samples_repeated", 0) for a in audits)
    metrics.update(
        {
            "audit": audits[0] if audits else {},
            "audit_epochs": audits,
            "exactly_once": exactly_once,
            "images_per_s": float(sum(rates)),
            "steps": run.step,
            "samples": int(sum(len(s) for s in sequences.values())),
            "epochs_trained": len(audits),
            "_sequences": sequences,
        }
    )
    return metrics


# --------------------------------------------------------------------------- report


def report(run: Run, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write ``metrics.json``, ``split.json`` (held-out ids), ``training.png`` and ``audit.png``."""
    if run.dist.rank != 0:
        return metrics
    cfg, folder = run.cfg, run.folder
    sequences = metrics.pop("_sequences")
    metrics.update(
        {
            "data": run.data.summary,
            "train_loss_last100": float(np.mean(run.losses[-100:])) if run.losses else None,
            "train_seconds": run.train_seconds,
            "wall_seconds": time.perf_counter() - run.started,
            "loader": cfg.loader.backend,
            "shuffle": cfg.shuffle.shuffle,
            "permutation": cfg.shuffle.permutation,
            "buffer_size": cfg.shuffle.buffer_size,
            "batch_size": cfg.loader.batch_size,
            "num_workers": cfg.loader.num_workers,
            "epochs": cfg.trainer.epochs,
            "max_steps": cfg.trainer.max_steps,
            "world_size": run.dist.world_size,
            "seed": cfg.seed,
            "device": str(run.device),
            "resume": run.resume,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
    )
    split = write_split(folder, run.data)
    if split is not None:
        metrics["data"]["split_file"] = split
    title = (
        f"{cfg.loader.backend} loader, {cfg.shuffle.shuffle} shuffle: test accuracy "
        f"{metrics['test_accuracy']:.3f}"
    )
    metrics["figures"] = {
        "training": training_figure(
            os.path.join(folder, "training.png"),
            run.losses,
            run.accs,
            title,
            epoch_starts=run.epoch_starts,
        ),
        "audit": audit_figure(
            sequences,
            run.data.train.labels,
            os.path.join(folder, "audit.png"),
            results={f"epoch {a['epoch']}": a for a in metrics["audit_epochs"]},
            title=title,
            label_names=run.data.train.classes,
        ),
    }
    path = os.path.join(folder, "metrics.json")
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2)
    log.info(
        "test accuracy %.4f on %d %s records, %.0f images/s, %d steps, audit spearman z %+.2f",
        metrics["test_accuracy"],
        metrics["test_samples"],
        run.data.summary["evaluation"]["kind"],
        metrics["images_per_s"],
        run.step,
        metrics["audit"].get("spearman_z", float("nan")),
    )
    log.info("wrote %s, training.png and audit.png in %s", os.path.basename(path), folder)
    return metrics


# --------------------------------------------------------------------------- the story


def train(cfg: DictConfig, out_dir: str | None = None) -> dict[str, Any]:
    """Set up, fit, evaluate and audit, report; return the metrics (empty on ranks > 0).

    Raises:
        RunConfigError: for a bad value or missing data, before the first step.
    """
    problems = validate(cfg)
    if problems:
        raise RunConfigError(problems)
    dist = Dist(cfg.trainer.distributed, cfg.trainer.collective_timeout_s)
    try:
        run = set_up(cfg, dist, out_dir)
        try:
            fit(run)
        except TFPathLoaderError as e:  # a dead worker (NOTE [worker death]), a bad image
            raise LoaderFault(e, run.folder, cfg.trainer.checkpoint_every) from e
        metrics = report(run, evaluate_and_audit(run))
        dist.barrier()
        return metrics
    finally:
        dist.close()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Entry point; returns the test accuracy (for Hydra sweepers that optimize it)."""
    quiet_tensorflow_logs()  # unless TF_CPP_MIN_LOG_LEVEL is set (NOTE [quiet TensorFlow])
    try:
        metrics = train(cfg)
    except RunConfigError as e:
        for problem in e.problems:
            print(f"train.py: error: {problem}", file=sys.stderr)
        sys.exit(2)
    except LoaderFault as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    return float(metrics.get("test_accuracy", float("nan")))


if __name__ == "__main__":
    main()

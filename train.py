"""Train a small CNN on a path index with either loader, audit the order it trained on.

    python train.py                                        # demo data, torch loader, global shuffle
    python train.py loader=tf shuffle=buffer               # tf.data loader, biased buffer shuffle
    python train.py -m loader=torch,tf shuffle=global,buffer && tfpathloader compare multirun/...
    torchrun --nproc_per_node=2 train.py trainer.distributed=true
    python train.py hydra.run.dir=outputs/run1 trainer.resume=auto    # resume a killed run

Writes ``metrics.json`` (test accuracy overall and per class, images/s, steps, samples, the
shuffle-quality audit of the ids trained on, resume accounting), ``training.png`` and
``audit.png`` into the Hydra run folder. Only this file and ``tfpathloader/hydra_config.py``
know Hydra; everything else takes plain arguments.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import time
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf

from tfpathloader import PathIndex
from tfpathloader.load.loader import make_loader
from tfpathloader.storage import is_url
from tfpathloader.tools.audit import audit_figure, audit_ids
from tfpathloader.tools.demo import demo_exists, make_demo
from train_app.config import register_configs
from train_app.models import to_input

log = logging.getLogger("train")
register_configs()


# --------------------------------------------------------------------------- set-up


class Dist:
    """Rank, world size and collectives; a no-op stand-in when not distributed."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.rank, self.world_size, self.local_rank = 0, 1, 0
        if not enabled:
            return
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise ValueError(
                "trainer.distributed=true needs the RANK and WORLD_SIZE that torchrun sets: "
                "torchrun --nproc_per_node=2 train.py trainer.distributed=true"
            )
        import torch.distributed as dist

        self.dist = dist
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))

    def barrier(self) -> None:
        if self.enabled:
            self.dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        self.dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        if not self.enabled:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.enabled:
            self.dist.destroy_process_group()


def ensure_data(cfg: DictConfig, dist: Dist) -> str:
    """The data folder, with the demo data made there (by rank 0) if it is missing."""
    if is_url(cfg.data.root):  # s3://, https://...: read where it is, never made here
        return str(cfg.data.root).rstrip("/")
    root = to_absolute_path(cfg.data.root)
    index = os.path.join(root, cfg.data.index)
    if not os.path.exists(index) and not glob.glob(index.replace(".tfrecord", "-*")):
        if not cfg.data.make_demo_if_missing:
            raise FileNotFoundError(f"no path index at {index} (data.make_demo_if_missing=false)")
        if dist.rank == 0 and not demo_exists(root):
            log.info("making the demo data in %s (once)", root)
            make_demo(
                root, per_label=cfg.data.per_label, seed=cfg.seed, progress=cfg.trainer.progress
            )
        dist.barrier()
    return root


def run_dir(out_dir: str | None) -> str:
    if out_dir is None:
        out_dir = HydraConfig.get().runtime.output_dir
    os.makedirs(out_dir, exist_ok=True)
    return out_dir


# --------------------------------------------------------------------------- checkpoints


def _checkpoint_path(folder: str, step: int, rank: int) -> str:
    return os.path.join(folder, "checkpoints", f"step-{step:08d}-rank{rank}.pt")


def save_checkpoint(folder: str, dist: Dist, payload: dict[str, Any]) -> None:
    """Every rank saves its own file; older steps go once all ranks hold the new one."""
    step = payload["step"]
    path = _checkpoint_path(folder, step, dist.rank)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    dist.barrier()
    for old in glob.glob(os.path.join(folder, "checkpoints", f"step-*-rank{dist.rank}.pt")):
        if old != path:
            os.unlink(old)


def find_checkpoint(resume: str, folder: str, dist: Dist) -> str | None:
    """The newest step every rank has a checkpoint for (``resume``: "auto", a folder or file)."""
    if resume not in ("auto", "true", "True"):
        resume = to_absolute_path(resume)
        if os.path.isfile(resume):
            return resume
        folder = resume
    steps: dict[int, set[int]] = {}
    for f in glob.glob(os.path.join(folder, "checkpoints", "step-*-rank*.pt")):
        name = os.path.basename(f)[len("step-") : -len(".pt")]
        step, rank = name.split("-rank")
        steps.setdefault(int(step), set()).add(int(rank))
    complete = [s for s, ranks in steps.items() if ranks == set(range(dist.world_size))]
    if not complete:
        return None
    return _checkpoint_path(folder, max(complete), dist.rank)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    index: PathIndex,
    device: torch.device,
    batch_size: int,
    channels: int,
    size: Any,
) -> dict[str, Any]:
    """Accuracy overall and per class on a held-out index."""
    model.eval()
    loader = make_loader(
        backend="torch",
        index=index,
        batch_size=batch_size,
        shuffle="none",
        channels=channels,
        size=size,
    )
    n_classes = index.num_classes
    correct = np.zeros(n_classes, dtype=np.int64)
    total = np.zeros(n_classes, dtype=np.int64)
    for batch in loader:
        logits = model(to_input(batch["image"].to(device)))
        pred = logits.argmax(1).cpu().numpy()
        y = batch["label"].numpy()
        np.add.at(total, y, 1)
        np.add.at(correct, y, pred == y)
    model.train()
    per_class = {
        index.label_name(k): (float(correct[k] / total[k]) if total[k] else None)
        for k in range(n_classes)
    }
    return {
        "test_accuracy": float(correct.sum() / max(1, total.sum())),
        "per_class_accuracy": per_class,
        "test_samples": int(total.sum()),
    }


# --------------------------------------------------------------------------- figures


def training_figure(path: str, losses: list[float], accs: list[float], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    def ema(values: list[float], k: float = 0.05) -> list[float]:
        out, m = [], None
        for v in values:
            m = v if m is None else (1 - k) * m + k * v
            out.append(m)
        return out

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    steps = np.arange(1, len(losses) + 1)
    for ax, values, name in ((axes[0], losses, "training loss"), (axes[1], accs, "batch accuracy")):
        ax.plot(steps, values, alpha=0.25, linewidth=0.8)
        ax.plot(steps, ema(values), linewidth=1.6)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
    axes[1].set_ylim(0, 1.02)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- training


def global_order(per_rank: list[list[np.ndarray]]) -> np.ndarray:
    """Interleave the ranks' batches step by step: the epoch's sequence of global batches."""
    steps = max((len(b) for b in per_rank), default=0)
    parts = [
        per_rank[r][s] for s in range(steps) for r in range(len(per_rank)) if s < len(per_rank[r])
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def train(cfg: DictConfig, out_dir: str | None = None) -> dict[str, Any]:
    """Train, evaluate, audit; return (and write) the metrics. Testable without @hydra.main."""
    dist = Dist(cfg.trainer.distributed)
    try:
        return _train(cfg, dist, out_dir)
    finally:
        dist.close()


def _train(cfg: DictConfig, dist: Dist, out_dir: str | None) -> dict[str, Any]:
    t_start = time.perf_counter()
    folder = dist.broadcast(run_dir(out_dir) if dist.rank == 0 else None)
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.trainer.device == "auto":
        device = torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.trainer.device)
    root = ensure_data(cfg, dist)
    index = PathIndex.read(os.path.join(root, cfg.data.index))
    size = tuple(cfg.data.size) if cfg.data.size is not None else None
    loader = instantiate(
        cfg.loader,
        index=index,
        shuffle=cfg.shuffle.name,
        permutation=cfg.shuffle.permutation,
        buffer_size=cfg.shuffle.buffer_size,
        drop_last=cfg.shuffle.drop_last,
        seed=cfg.seed,
        rank=dist.rank,
        world_size=dist.world_size,
        channels=cfg.data.channels,
        size=size,
        _convert_="all",
    )
    channels = loader.config.channels
    model = instantiate(cfg.model, channels=channels, num_classes=index.num_classes).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay
    )
    net: torch.nn.Module = model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None
        )

    # -- resume --------------------------------------------------------------------------
    step, start_epoch = 0, 0
    losses: list[float] = []
    accs: list[float] = []
    trained: dict[int, list[np.ndarray]] = {}
    resume_info: dict[str, Any] = {"resumed": False}
    ckpt_path = find_checkpoint(cfg.trainer.resume, folder, dist) if cfg.trainer.resume else None
    if cfg.trainer.resume and ckpt_path is None:
        log.warning(
            "trainer.resume=%s: no checkpoint found in %s; starting fresh",
            cfg.trainer.resume,
            folder,
        )
    if ckpt_path is not None:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        loader.load_state_dict(ckpt["loader"])
        step, start_epoch = ckpt["step"], ckpt["loader"]["epoch"]
        losses, accs = ckpt["losses"], ckpt["accs"]
        trained = {int(e): [np.asarray(b) for b in bs] for e, bs in ckpt["trained"].items()}
        resume_info = {
            "resumed": True,
            "from_step": step,
            "checkpoint": ckpt_path,
            "runs": ckpt.get("runs", 1) + 1,
        }
        log.info(
            "resumed from %s (step %d, epoch %d, %d batches into it)",
            ckpt_path,
            step,
            start_epoch,
            loader.batches_consumed,
        )

    # -- the loop ------------------------------------------------------------------------
    max_steps = cfg.trainer.max_steps
    total_steps = len(loader) * cfg.trainer.epochs
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    show = cfg.trainer.progress and dist.rank == 0
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not show,
        dynamic_ncols=True,
        desc=f"{cfg.loader.backend}/{cfg.shuffle.name}",
    )
    t_train = time.perf_counter()
    samples_here = 0
    done = False
    for epoch in range(start_epoch, cfg.trainer.epochs):
        if not (ckpt_path is not None and epoch == start_epoch):
            loader.set_epoch(epoch)
        batches = trained.setdefault(epoch, [])
        for batch in loader:
            x = to_input(batch["image"].to(device, non_blocking=True))
            y = batch["label"].to(device, non_blocking=True)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            batches.append(batch["index"].cpu().numpy().copy())
            samples_here += len(y)
            step += 1
            losses.append(loss.item())
            accs.append(float((logits.argmax(1) == y).float().mean()))
            if show:
                rate = samples_here * dist.world_size / max(1e-9, time.perf_counter() - t_train)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", img_s=f"{rate:,.0f}", refresh=False)
                bar.update(1)
            if cfg.trainer.checkpoint_every and step % cfg.trainer.checkpoint_every == 0:
                save_checkpoint(
                    folder,
                    dist,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "loader": loader.state_dict(),
                        "step": step,
                        "losses": losses,
                        "accs": accs,
                        "trained": trained,
                        "runs": resume_info.get("runs", 1),
                    },
                )
            if max_steps is not None and step >= max_steps:
                done = True
                break
        if done:
            break
    train_s = time.perf_counter() - t_train
    bar.close()
    if hasattr(loader, "close"):
        loader.close()

    # -- gather, evaluate, audit ---------------------------------------------------------
    all_trained = dist.gather({e: bs for e, bs in trained.items()})
    rates = dist.gather(samples_here / max(1e-9, train_s))
    metrics: dict[str, Any] = {}
    if dist.rank == 0:
        test = PathIndex.read(os.path.join(root, cfg.data.test_index))
        metrics.update(evaluate(model, test, device, cfg.trainer.eval_batch_size, channels, size))
        epochs = sorted({e for r in all_trained for e in r})
        audits = []
        sequences = {}
        exactly_once = True
        for e in epochs:
            ids = global_order([r.get(e, []) for r in all_trained])
            layout = loader.sampler.layout
            complete = len(ids) == layout.total
            pad = _padding(loader, dist.world_size, len(ids))
            a = audit_ids(ids, index.labels, padding=pad, label_names=index.classes)
            a["epoch"] = e
            a["complete_epoch"] = complete
            if complete and not cfg.shuffle.drop_last:
                # Every record of the index, once (tail padding counted apart by the audit).
                a["samples_lost"] = int(len(index) - a["unique"])
                a["samples_repeated"] = a["duplicates"]
                exactly_once = exactly_once and a["samples_lost"] == 0 and a["duplicates"] == 0
            elif complete:
                a["samples_repeated"] = a["duplicates"]
                exactly_once = exactly_once and a["duplicates"] == 0
            audits.append(a)
            sequences[f"epoch {e}"] = ids
        metrics["audit"] = audits[0] if audits else {}
        metrics["audit_epochs"] = audits
        metrics["exactly_once"] = exactly_once
        resume_info["samples_lost"] = sum(a.get("samples_lost", 0) for a in audits)
        resume_info["samples_repeated"] = sum(a.get("samples_repeated", 0) for a in audits)
        metrics.update(
            {
                "images_per_s": float(sum(rates)),
                "steps": step,
                "samples": int(sum(len(b) for r in all_trained for bs in r.values() for b in bs)),
                "epochs_trained": len(epochs),
                "train_loss_last100": float(np.mean(losses[-100:])) if losses else None,
                "train_seconds": train_s,
                "wall_seconds": time.perf_counter() - t_start,
                "loader": cfg.loader.backend,
                "shuffle": cfg.shuffle.name,
                "permutation": cfg.shuffle.permutation,
                "buffer_size": cfg.shuffle.buffer_size,
                "batch_size": cfg.loader.batch_size,
                "num_workers": cfg.loader.num_workers,
                "world_size": dist.world_size,
                "seed": cfg.seed,
                "device": str(device),
                "resume": resume_info,
                "config": OmegaConf.to_container(cfg, resolve=True),
            }
        )
        title = (
            f"{cfg.loader.backend} loader, {cfg.shuffle.name} shuffle: test accuracy "
            f"{metrics['test_accuracy']:.3f}"
        )
        metrics["figures"] = {
            "training": training_figure(os.path.join(folder, "training.png"), losses, accs, title),
            "audit": audit_figure(
                sequences,
                index.labels,
                os.path.join(folder, "audit.png"),
                results={f"epoch {a['epoch']}": a for a in audits},
                title=title,
            ),
        }
        with open(os.path.join(folder, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        log.info(
            "test accuracy %.4f, %.0f images/s, %d steps, audit spearman z %s -> %s",
            metrics["test_accuracy"],
            metrics["images_per_s"],
            step,
            _fmt(metrics["audit"].get("spearman_z")),
            os.path.join(folder, "metrics.json"),
        )
    dist.barrier()
    return metrics


def _padding(loader: Any, world_size: int, n: int) -> np.ndarray | None:
    """Which delivered positions (global order) repeat a record as tail padding."""
    layout = loader.sampler.layout
    if layout.padding == 0:
        return None
    per_rank = [layout.positions(r) for r in range(world_size)]
    steps = layout.steps
    parts = []
    for s in range(steps):
        for r in range(world_size):
            lo = s * layout.batch_size
            parts.append(per_rank[r][lo : lo + layout.batch_size_at(s)])
    mask = layout.is_padding(np.concatenate(parts))
    return mask[:n] if len(mask) >= n else None


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Entry point; returns the test accuracy (for Hydra sweepers that optimize it)."""
    metrics = train(cfg)
    return float(metrics.get("test_accuracy", float("nan")))


if __name__ == "__main__":
    main()

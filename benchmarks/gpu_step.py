"""Training steps on CUDA with each backend: loader wait, pinned batches, copy/compute overlap.

    python benchmarks/gpu_step.py --out gpu_step.json [--index INDEX] [--steps 60]

Without ``--index`` it makes a small demo set (28x28 grey PNGs) in a temporary folder. For each
backend (torch, tf: skipped with a line when TensorFlow is missing) and each model (the demo
CNN, and a ResNet-ish conv net written here), it reports:

- ``wait_fraction``: share of the training loop's wall time spent in ``next(loader)``, the
  copy issued with ``non_blocking=True`` and the step run as a training loop would (one sync
  at the end); the step itself timed alone (``compute_ms``) says how much work there was to
  hide the loader behind.
- ``pinned``: ``batch["image"].is_pinned()`` for the host batch the loader delivers;
  ``shared``: whether it lives in shared memory (a worker's batch slot, no copy to the main
  process). ``host_copies``: host-side copies of a batch between the worker's decode and the
  GPU: 1 when the loader pins it (slot -> pinned buffer), and 1 more when it is pageable
  (CUDA stages a pageable copy through its own pinned bounce buffer, synchronously).
- ``overlap``: the same host batch copied on a side stream while the model steps on the
  default stream, against copy then step in series (CUDA events): ``overlap_fraction`` is the
  share of the copy time hidden behind compute (1.0: fully hidden; ~0 for pageable memory,
  whose "non-blocking" copy blocks the host).

On a machine without CUDA it runs a few CPU steps per backend and model and prints
"no CUDA device: skipped the CUDA parts". Results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tfpathloader import PathIndex, make_demo, make_loader
from train_app.models import small_cnn, to_input


def resnetish(*, channels: int, num_classes: int, width: int = 64) -> nn.Module:
    """A ResNet-18-shaped net (4 stages of 2 basic blocks), a 3x3 stem for small images."""

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
            self.skip: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.skip = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    layers: list[nn.Module] = [
        nn.Conv2d(channels, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    cin = width
    for k, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
        layers += [Block(cin, cout, 1 if k == 0 else 2), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


MODELS = {"small_cnn": small_cnn, "resnetish": resnetish}


def _step_fn(model: nn.Module, device: torch.device) -> Any:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    amp = device.type == "cuda"

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(to_input(images)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _batches(loader: Any) -> Any:
    """Batches forever, epoch after epoch."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _train_loop(loader: Any, step: Any, device: torch.device, steps: int) -> dict[str, Any]:
    """A training loop: wait for a batch, copy it non-blocking, step; one sync at the end."""
    it = _batches(loader)
    for _ in range(3):  # warm-up: workers, traces, cuDNN autotuning
        b = next(it)
        step(b["image"].to(device, non_blocking=True), b["label"].to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize()
    wait = 0.0
    host: dict[str, Any] = {}
    t0 = time.perf_counter()
    for _ in range(steps):
        w0 = time.perf_counter()
        b = next(it)
        wait += time.perf_counter() - w0
        if not host:
            img = b["image"]
            host = {"pinned": bool(img.is_pinned()), "shared": bool(img.is_shared())}
            host["shape"] = list(img.shape)
        step(b["image"].to(device, non_blocking=True), b["label"].to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {
        "steps": steps,
        "step_ms": 1000 * wall / steps,
        "wait_ms": 1000 * wait / steps,
        "wait_fraction": wait / wall,
        **host,
        "host_copies": None if not host or device.type != "cuda" else (2 - host["pinned"]),
        "last_batch": b,
    }


def _overlap(batch: dict[str, Any], step: Any, device: torch.device, reps: int = 20) -> dict:
    """Copy on a side stream while stepping on the default stream, vs in series (CUDA events)."""
    host_img, host_lbl = batch["image"], batch["label"]
    copy_stream = torch.cuda.Stream()
    ev = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
    x, y = host_img.to(device), host_lbl.to(device)

    def timed(fn: Any) -> float:
        torch.cuda.synchronize()
        a, b = ev(), ev()
        a.record()
        for _ in range(reps):
            fn()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / reps

    def copy() -> None:
        host_img.to(device, non_blocking=True)

    def compute() -> None:
        step(x, y)

    def serial() -> None:
        copy()
        compute()

    def overlapped() -> None:
        with torch.cuda.stream(copy_stream):
            host_img.to(device, non_blocking=True)
        compute()
        torch.cuda.current_stream().wait_stream(copy_stream)

    copy_ms, compute_ms = timed(copy), timed(compute)
    serial_ms, overlapped_ms = timed(serial), timed(overlapped)
    hidden = (serial_ms - overlapped_ms) / max(1e-9, min(copy_ms, compute_ms))
    nbytes = host_img.numel() * host_img.element_size()
    return {
        "copy_ms": copy_ms,
        "compute_ms": compute_ms,
        "serial_ms": serial_ms,
        "overlapped_ms": overlapped_ms,
        "overlap_fraction": max(0.0, min(1.0, hidden)),
        "h2d_gb_per_s": nbytes / (copy_ms / 1000) / 1e9,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        print("no CUDA device: skipped the CUDA parts", flush=True)
    transform = None
    if args.photos or args.crop:
        # The ImageNet-style workload: photos of varied size through the training crop.
        from photos import make_photo_set

        from tfpathloader import transforms as T

        crop = tuple(args.size) if args.size else (224, 224)
        transform = T.Compose([T.RandomResizedCrop(crop), T.RandomHorizontalFlip()])
    if args.photos:
        index = make_photo_set(tempfile.mkdtemp(prefix="gpu_photos_"), args.photos, progress=False)
    elif args.index:
        index = PathIndex.read(args.index)
    else:
        tmp = tempfile.mkdtemp(prefix="gpu_step_")
        make_demo(tmp, per_label=args.per_label, test_per_label=1, progress=False)
        index = PathIndex.read(os.path.join(tmp, "index.tfrecord"))
    steps = args.steps if cuda else min(args.steps, 3)
    out: dict[str, Any] = {
        "cuda": cuda,
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "images": len(index),
        "batch_size": args.batch_size,
        "workers": args.workers,
        "workload": "RandomResizedCrop + flip" if transform is not None else "decode only",
        "runs": [],
    }
    for backend in args.backends.split(","):
        for name in args.models.split(","):
            row: dict[str, Any] = {"backend": backend, "model": name}
            try:
                loader = make_loader(
                    backend=backend,
                    index=index,
                    batch_size=args.batch_size,
                    num_workers=args.workers,
                    seed=0,
                    **(
                        {"transform": transform}
                        if transform is not None
                        else {"size": tuple(args.size) if args.size else None}
                    ),
                )
            except ImportError as e:
                row["skipped"] = str(e)
                print(f"{backend} / {name}: skipped: {e}", flush=True)
                out["runs"].append(row)
                continue
            channels = loader.config.channels
            # On CPU (CI) only a taste: a narrow ResNet-ish, a few steps.
            kw = {} if cuda or name != "resnetish" else {"width": 8}
            model = MODELS[name](channels=channels, num_classes=10, **kw).to(device)
            model = model.to(memory_format=torch.channels_last)
            step = _step_fn(model, device)
            loop = _train_loop(loader, step, device, steps)
            batch = loop.pop("last_batch")
            row.update(loop)
            if cuda:
                row["overlap"] = _overlap(batch, step, device)
            if hasattr(loader, "close"):
                loader.close()
            print(json.dumps(row), flush=True)
            out["runs"].append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", help="path index to train on (default: make a demo set)")
    p.add_argument("--per-label", type=int, default=1000, help="demo images per label")
    p.add_argument("--out", default="gpu_step.json", help="where to write the JSON results")
    p.add_argument("--steps", type=int, default=60, help="timed steps per run (CPU: 3)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--backends", default="torch,tf")
    p.add_argument("--models", default="small_cnn,resnetish")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument(
        "--photos",
        type=int,
        metavar="N",
        help="make N ImageNet-like JPEGs (short side 300-500 px) and train on them through "
        "RandomResizedCrop(--size, default 224) + flip",
    )
    p.add_argument("--crop", action="store_true", help="--index through the training crop")
    args = p.parse_args(argv)
    result = run(args)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

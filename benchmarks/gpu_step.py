"""Training steps on CUDA with each loader: images/s, loader wait, pinned batches, copy overlap.

    python benchmarks/gpu_step.py --out gpu_step.json [--index INDEX] [--steps 60]
    python benchmarks/gpu_step.py --photos 2000 --models small_cnn,resnet50 --out photos.json

Without ``--index`` it makes a small demo set (28x28 grey PNGs) in a temporary folder. Loaders
(``--loaders``): ``torch`` (workers decode on the CPU), ``torch-device`` (``decode_on="device"``:
workers read and plan, the batch is decoded on the GPU by nvImageCodec, NOTE [device decode]),
``tf``, and ``dali`` (NVIDIA DALI as its docs teach it: ``fn.readers.file``, ``mixed``
``fn.decoders.image_random_crop`` or ``image``, ``fn.resize`` and ``fn.flip`` on the GPU,
``DALIGenericIterator``; on a machine without CUDA, its CPU pipeline). A loader whose package
is missing is skipped with a line. Workers default to every core. For each loader and each
model (the demo CNN, a ResNet-18-shaped net for small images, and a ResNet-50-shaped one with
bottleneck blocks for photos) it reports ``images_per_s`` and:

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


def resnet50(*, channels: int, num_classes: int, width: int = 64) -> nn.Module:
    """A ResNet-50-shaped net: 7x7 stem, max pool, bottleneck stages of 3, 4, 6, 3 blocks."""

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, mid: int, stride: int):
            super().__init__()
            cout = 4 * mid
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
            )  # fmt: skip
            self.skip: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.skip = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    layers: list[nn.Module] = [
        nn.Conv2d(channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
        nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
    ]  # fmt: skip
    cin = width
    stages = zip((width, 2 * width, 4 * width, 8 * width), (3, 4, 6, 3), strict=True)
    for k, (mid, blocks) in enumerate(stages):
        for b in range(blocks):
            layers.append(Bottleneck(cin, mid, 2 if b == 0 and k > 0 else 1))
            cin = 4 * mid
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


MODELS = {"small_cnn": small_cnn, "resnetish": resnetish, "resnet50": resnet50}


class DaliLoader:
    """DALI's pipeline behind the loaders' interface (``set_epoch``, dicts of tensors)."""

    def __init__(self, index: PathIndex, *, batch_size: int, workers: int, crop: Any,
                 size: Any, cuda: bool):  # fmt: skip
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        paths = [index.path(i) for i in range(len(index))]
        labels = [int(x) for x in index.labels]
        dev = "gpu" if cuda else "cpu"

        @pipeline_def(batch_size=batch_size, num_threads=workers, seed=0,
                      device_id=torch.cuda.current_device() if cuda else None)  # fmt: skip
        def pipe() -> Any:
            jpegs, lab = fn.readers.file(files=paths, labels=labels, random_shuffle=True,
                                         name="reader")  # fmt: skip
            decode = "mixed" if cuda else "cpu"
            if crop is not None:
                images = fn.decoders.image_random_crop(
                    jpegs, device=decode, output_type=types.RGB, random_area=[0.08, 1.0],
                    random_aspect_ratio=[3 / 4, 4 / 3], num_attempts=10,
                )  # fmt: skip
                images = fn.resize(images, device=dev, resize_x=crop[1], resize_y=crop[0])
                images = fn.flip(
                    images, device=dev, horizontal=fn.random.coin_flip(probability=0.5)
                )
            else:
                images = fn.decoders.image(jpegs, device=decode, output_type=types.RGB)
                if size is not None:
                    images = fn.resize(images, device=dev, resize_x=size[1], resize_y=size[0])
            return fn.transpose(images, device=dev, perm=[2, 0, 1]), lab

        self.it = DALIGenericIterator(pipe(), ["image", "label"], reader_name="reader",
                                      last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True)  # fmt: skip
        self.config = type("Config", (), {"channels": 3})

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self) -> Any:
        for b in self.it:
            yield {"image": b[0]["image"], "label": b[0]["label"].reshape(-1).long()}

    def close(self) -> None:
        pass


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
            on_host = img.device.type == "cpu"
            host = {"pinned": on_host and bool(img.is_pinned()),
                    "shared": on_host and bool(img.is_shared()), "on_device": not on_host}  # fmt: skip
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
        "images_per_s": steps * len(b["label"]) / wall,
        **host,
        "host_copies": None
        if not host or device.type != "cuda" or host["on_device"]
        else (2 - host["pinned"]),
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


def _make(kind: str, index: PathIndex, args: argparse.Namespace, transform: Any, cuda: bool) -> Any:
    """One of ``--loaders``, for ``index``."""
    size = tuple(args.size) if args.size else None
    if kind == "dali":
        try:
            import nvidia.dali  # noqa: F401
        except ImportError as e:
            raise ImportError(
                "the dali row needs nvidia-dali (pip install nvidia-dali-cuda120)"
            ) from e
        crop = (size or (224, 224)) if transform is not None else None
        return DaliLoader(index, batch_size=args.batch_size, workers=args.workers, crop=crop,
                          size=size, cuda=cuda)  # fmt: skip
    backend, _, how = kind.partition("-")
    return make_loader(
        backend=backend,  # type: ignore[arg-type]
        index=index,
        batch_size=args.batch_size,
        num_workers=args.workers,
        seed=0,
        decode_on="device" if how == "device" else "workers",
        **({"transform": transform} if transform is not None else {"size": size}),
    )


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
    for kind in args.loaders.split(","):
        for name in args.models.split(","):
            row: dict[str, Any] = {"loader": kind, "model": name}
            try:
                loader = _make(kind, index, args, transform, cuda)
            except ImportError as e:
                row["skipped"] = str(e)
                print(f"{kind} / {name}: skipped: {e}", flush=True)
                out["runs"].append(row)
                continue
            channels = loader.config.channels
            # On CPU (CI) only a taste: narrow nets, a few steps.
            kw = {} if cuda or name == "small_cnn" else {"width": 8}
            model = MODELS[name](channels=channels, num_classes=10, **kw).to(device)
            model = model.to(memory_format=torch.channels_last)
            step = _step_fn(model, device)
            loop = _train_loop(loader, step, device, steps)
            batch = loop.pop("last_batch")
            row.update(loop)
            if cuda and batch["image"].device.type == "cpu":
                row["overlap"] = _overlap(batch, step, device)
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
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (tf: parallel calls; DALI: threads); default: every core",
    )
    p.add_argument(
        "--loaders",
        default="torch,torch-device,tf,dali",
        help="comma-separated: torch, torch-device (decode_on='device'), tf, dali",
    )
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

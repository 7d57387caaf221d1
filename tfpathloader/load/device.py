"""``decode_on="device"``: workers read and plan, each batch is decoded on the loader's device.

NOTE [device decode]: with ``decode_on="device"`` the torch backend's workers do what needs no
pixels: they read a batch's files (with the reader's rules, NOTE [hostile files]), check them
and plan each record from its header (:func:`~.decode.inspect`: the same ids, boxes and flips as
the CPU path), and pack the bytes into the batch's shared-memory slot. The main process then
decodes the whole batch in one nvImageCodec call on the device (on a GPU: nvJPEG, with the
hardware JPEG decoder of A100/H100/H200 where present; only the box of a crop is decoded), and
resizes, mirrors and converts each image there, into the batch's rows: no decoded pixels cross
the host, and no pinned copy is needed. The same code runs with nvImageCodec's CPU backend when
the device is the CPU, which is how it is tested without a GPU. Its pixels differ from the CPU
path's (``decode_on="workers"``) in two ways, both bounded: the resize runs in float32 and rounds
(the CPU path's uint8 kernel rounds in fixed point: at most one grey level apart), and no DCT
scaling is used (nvImageCodec has none: a box at least twice the output is decoded in full and
then shrunk); on a GPU, nvJPEG's IDCT and upsampling differ from libjpeg-turbo's by a few grey
levels. A record nvImageCodec cannot decode goes through the CPU path in the main process, which
decodes it or names the error exactly as the workers would; so do PNGs and other formats (the
device path is for JPEG photos: a PNG set decodes faster in the workers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ImageLoadError
from ..transforms import Plan
from .batches import DecodeJob
from .decode import Source, inspect, render

__all__ = ["DeviceDecoder", "PlanJob", "PlannedBatch"]


@dataclass
class PlannedBatch:
    """A batch read and planned by a worker: its records' plans and where their bytes lie."""

    sources: list[Source] = field(default_factory=list)  # ``data`` emptied when in the slot
    spans: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) in the slot
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    error: BaseException | None = None
    remote: dict[str, int] | None = None


class PlanJob:
    """In a worker: read and plan a batch, its bytes packed into the slot (NOTE [device decode])."""

    def __init__(self, job: DecodeJob):
        self.job = job

    def __call__(self, ids: np.ndarray, epoch: int, out: np.ndarray | None = None) -> PlannedBatch:
        job = self.job
        paths = job.index.paths(ids)
        data, remote = job._read(ids.tolist(), paths)
        got = PlannedBatch(remote=remote)
        at = 0
        room = out.reshape(-1) if out is not None else None
        for rid, path, d in zip(ids.tolist(), paths, data, strict=True):
            try:
                if isinstance(d, BaseException):
                    raise d
                src = inspect(d, job.recipe, record_id=rid, path=path, epoch=epoch)
            except ImageLoadError as e:
                if not job.skip:
                    got.error = e
                    return got
                got.skipped.append((e.record_id, e.path, e.cause))
                continue
            if room is not None and at + len(d) <= len(room):
                room[at : at + len(d)] = np.frombuffer(d, np.uint8)
                got.spans.append((at, len(d)))
                src.data = b""  # travels in the slot, not through the socket
                at += len(d)
            else:
                got.spans.append((-1, len(d)))
            got.sources.append(src)
        return got


class DeviceDecoder:
    """In the main process: a planned batch -> its images on ``device`` (NOTE [device decode]).

    Args:
        job: The loader's job (its recipe and image shape).
        device: A ``torch.device``: ``cuda`` decodes with nvImageCodec's GPU backends, ``cpu``
            with its CPU backend.
    """

    def __init__(self, job: DecodeJob, device: Any):
        import torch

        from .jpeg import _import_nvimgcodec

        nv = _import_nvimgcodec()
        if not nv:
            raise ImportError(
                "decode_on='device' needs nvImageCodec: pip install 'tfpathloader[nvimgcodec]'"
            )
        self.nv, self.torch, self.job, self.device = nv, torch, job, device
        options = ":fast_idct=1" if job.recipe.jpeg_dct == "fast" else ""
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.decoder = nv.Decoder(device_id=index, options=options)
        else:
            self.decoder = nv.Decoder(
                device_id=nv.NVIMGCODEC_DEVICE_CPU_ONLY,
                max_num_cpu_threads=1,
                backends=[nv.Backend(nv.BackendKind.CPU_ONLY)],
                options=options,
            )
        self._pending: list[tuple[Any, Any, int]] = []  # (event, release, slot)
        unchanged = {
            "color_spec": nv.ColorSpec.UNCHANGED,
            "sample_format": nv.SampleFormat.I_UNCHANGED,
        }
        self.params = {  # EXIF orientation not applied; grey stays one channel
            False: nv.DecodeParams(apply_exif_orientation=False),
            True: nv.DecodeParams(apply_exif_orientation=False, **unchanged),
        }

    def release_after(self, release: Any, slot: int) -> None:
        """Give ``slot`` back once the device has read the bytes it holds.

        On a GPU the decode reads them asynchronously on the current stream: the slot is
        freed once an event recorded after the decode has completed (looked at on each call).
        """
        if self.device.type != "cuda":
            release(slot)
            return
        event = self.torch.cuda.Event()
        event.record(self.torch.cuda.current_stream(self.device))
        self._pending.append((event, release, slot))
        while self._pending and self._pending[0][0].query():
            _, free, done = self._pending.pop(0)
            free(done)

    def __call__(
        self, planned: PlannedBatch, slot: np.ndarray | None
    ) -> tuple[Any, list[int], list[tuple[int, str, str]]]:
        """The batch's images ``[n, H, W, C]`` uint8 on the device, the ids kept and skipped."""
        torch = self.torch
        srcs = planned.sources
        flat = slot.reshape(-1) if slot is not None else None
        streams = []
        for src, (at, n) in zip(srcs, planned.spans, strict=True):
            data = (
                flat[at : at + n]
                if at >= 0 and flat is not None
                else np.frombuffer(src.data, np.uint8)
            )
            stream = self.nv.CodeStream(data)
            if src.plan.box != (0, 0, src.height, src.width):
                top, left, bh, bw = src.plan.box
                stream = stream.get_sub_code_stream(
                    region=self.nv.Region(top, left, top + bh, left + bw)
                )
            streams.append((stream, data))
        images = self._decode(streams, srcs)
        out = torch.empty((len(srcs), *self.job.shape), dtype=torch.uint8, device=self.device)
        kept: list[int] = []
        skipped: list[tuple[int, str, str]] = []
        for src, (_, data), img in zip(srcs, streams, images, strict=True):
            row = out[len(kept)]
            try:
                if img is None:  # the CPU path decodes it, or names the error (as workers do)
                    src.data = bytes(data)
                    row.copy_(torch.from_numpy(render(src, self.job.recipe)))
                else:
                    self._finish(img, src, row)
            except ImageLoadError as e:
                if not self.job.skip:
                    raise
                skipped.append((e.record_id, e.path, e.cause))
                continue
            kept.append(src.record_id)
        return out[: len(kept)], kept, skipped

    def _decode(self, streams: list[tuple[Any, np.ndarray]], srcs: list[Source]) -> list[Any]:
        """nvImageCodec's images (None where it could not decode), grey ones apart."""
        images: list[Any] = [None] * len(srcs)
        for grey in (False, True):
            which = [k for k, s in enumerate(srcs) if s.kind == "jpeg" and s.grey == grey]
            if not which:
                continue
            kw: dict[str, Any] = {"params": self.params[grey]}
            if self.device.type == "cuda":
                kw["cuda_stream"] = self.torch.cuda.current_stream(self.device).cuda_stream
            got = self.decoder.decode([streams[k][0] for k in which], **kw)
            for k, img in zip(which, got, strict=True):
                images[k] = img
        return images

    def _finish(self, img: Any, src: Source, row: Any) -> None:
        """Resize (float32, rounded), mirror and convert one decoded box into its row."""
        torch = self.torch
        if self.device.type == "cuda":
            t = torch.from_dlpack(img)
        else:
            t = torch.from_numpy(np.asarray(img))
        t = t.reshape(t.shape[0], t.shape[1], -1).permute(2, 0, 1)[None]
        plan: Plan = src.plan
        if tuple(t.shape[2:]) != plan.size:
            t = torch.nn.functional.interpolate(
                t.float(), size=plan.size, mode="bilinear", align_corners=False,
                antialias=plan.antialias,
            ).round_().clamp_(0, 255)  # fmt: skip
        if plan.flip:
            t = t.flip(-1)
        channels = row.shape[-1]
        if channels == 1 and t.shape[1] == 3:  # Pillow's formula (NOTE [pixel rules])
            w = torch.tensor([19595, 38470, 7471], device=t.device).view(1, 3, 1, 1)
            t = ((t.to(torch.int64) * w).sum(1, keepdim=True) + 32768) >> 16
        row.copy_(t[0].permute(1, 2, 0).expand(*row.shape))

"""The one decode path of both backends: file bytes and a per-record plan -> rows of a batch.

NOTE [one decode path]: a record goes through two steps, whichever backend runs them:
:func:`inspect` reads its header (size, format, colour) from the bytes, applies the checks
about hostile files (PNG chunks, Pillow's decompression-bomb limit from the header, before
anything is decoded) and plans it (the source box, the output size, the mirror flag; from
``default_rng([seed, epoch, record id, TRANSFORM])`` for a random pipeline); :func:`render`
decodes what the plan needs and writes the result into its row of the batch. The torch backend
calls :func:`decode_batch` in its worker processes, straight into shared-memory slots; the tf
backend calls it in its tf.data map over whole batches. The same pixels and the same outcome in
both backends then hold by construction: there is one function to agree with.

Decoders, by what the bytes are (not the file name):

- JPEG: libjpeg-turbo through ``simplejpeg`` (a core dependency), with 1/2, 1/4 and 1/8 scaling
  inside the IDCT when the box is at least that many times the output (NOTE [DCT scaling]),
  decoding straight into the batch row when nothing else is to be done. A crop that is not
  DCT-scaled decodes only its region with nvImageCodec when it is installed (the ``nvimgcodec``
  extra; NOTE [region decode] in :mod:`.jpeg`). Pixels: libjpeg-turbo's accurate integer IDCT
  and fancy upsampling, Pillow's exactly, or its fast IDCT with ``jpeg_dct="fast"`` (what
  TensorFlow's ``decode_jpeg`` does by default). CMYK/YCCK JPEGs go to Pillow.
- PNG: libspng through ``pyspng`` (the ``png`` extra) for 8-bit grey, grey+alpha, RGB and RGBA;
  Pillow for the rest, after the checks of NOTE [png checks] in :mod:`.png`.
- anything else Pillow reads (GIF, BMP, TIFF, WebP ...): Pillow, whole, then cropped.

Both backends call it in worker processes (NOTE [tf workers]): in tf.data's threads, the decoders
that hold the GIL (pyspng, and the Python around every call) ran on one core (measured, the same
images over 2 threads against 1: simplejpeg 1.8-2.0x, nvImageCodec 1.9x, Pillow 0.7-1.8x,
pyspng 0.97x).

NOTE [pixel rules]: 16-bit samples keep their high byte; palette images expand through their
palette; alpha is dropped (not composited); RGB becomes grey by Pillow's ITU-R 601-2 integer
formula ``(19595 R + 38470 G + 7471 B + 32768) >> 16``, after any resize; grey becomes RGB by
repetition. ``channels=None`` (as stored) means 1 for grey images, 3 for the rest.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import BatchShapeError, ImageLoadError, TransformOutputError
from ..order.spec import Stream
from ..transforms import Plan, Transform, plan_rng, record_rng
from . import jpeg
from .files import FileReader
from .png import SIGNATURE, check_png, check_rows, png_header

try:  # optional: libspng, the faster PNG decoder
    import pyspng as _pyspng
except ImportError:  # pragma: no cover - depends on the environment
    _pyspng = None

__all__ = [
    "Recipe",
    "Source",
    "decode_batch",
    "decode_image",
    "inspect",
    "load_image",
    "read_file",
    "render",
]

Kind = Literal["jpeg", "png", "pillow"]
Callback = Callable[[np.ndarray, np.random.Generator], Any]


@dataclass(frozen=True)
class Recipe:
    """What every record of a loader becomes (picklable: it travels to worker processes).

    Attributes:
        channels: 1 or 3 output channels (``None``: as stored, for :func:`decode_image`).
        pipeline: A :mod:`tfpathloader.transforms` pipeline, planned from each header
            (``size=`` is ``Resize(size)``); ``None`` keeps every image whole.
        callback: A user callable ``f(image CxHxW, rng) -> CxHxW uint8`` (NOTE [user
            transform]), run on the whole decoded image.
        jpeg_dct: ``"accurate"`` or ``"fast"`` (see :func:`~tfpathloader.make_loader`).
        seed: The loader's seed, for the per-record generators.
    """

    channels: int | None = None
    pipeline: Transform | None = None
    callback: Callback | None = None
    jpeg_dct: Literal["accurate", "fast"] = "accurate"
    seed: int = 0


@dataclass
class Source:
    """One record after :func:`inspect`: its bytes, what they hold, and its plan."""

    record_id: int
    path: str
    data: bytes
    kind: Kind
    height: int
    width: int
    grey: bool  # stored with one channel
    plan: Plan  # the whole image at its own size when there is nothing to do


def read_file(path: str, record_id: int = -1, reader: FileReader | None = None) -> bytes:
    """The bytes of ``path``, read under the rules of NOTE [hostile files] (or by URL)."""
    from ..storage import is_url, read_url

    if is_url(path):  # s3://, gs://, https://...: tfpathloader.storage (retries, timeouts)
        return read_url(path, record_id)
    return (reader or _READER).read(path, record_id)


_READER = FileReader()


# -- step one: headers, checks and plans -----------------------------------------------------


def _check_pixels(h: int, w: int, record_id: int, path: str) -> None:
    """Pillow's decompression-bomb rule, from the header, in Pillow's words."""
    limit, pixels = Image.MAX_IMAGE_PIXELS, h * w
    if limit and pixels > limit:
        over = 2 * limit if pixels > 2 * limit else limit
        raise ImageLoadError(
            record_id,
            path,
            "image is larger than Pillow's decompression-bomb limit (Image size "
            f"({pixels} pixels) exceeds limit of {over} pixels, could be decompression bomb "
            "DOS attack.)",
        )


def _pillow_error(e: BaseException, record_id: int, path: str) -> ImageLoadError:
    """A Pillow failure as the ImageLoadError both backends raise."""
    if isinstance(e, ImageLoadError):
        return e
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageLoadError(
            record_id, path, f"image is larger than Pillow's decompression-bomb limit ({e})"
        )
    if isinstance(e, UnidentifiedImageError):
        return ImageLoadError(
            record_id, path, "not a recognized image format (cannot identify image file)"
        )
    if isinstance(e, (IndexError, struct.error)):  # a plugin reading past a short field
        return ImageLoadError(
            record_id, path, f"image is corrupt or truncated: {type(e).__name__}: {e}"
        )
    return ImageLoadError(record_id, path, f"image is corrupt or truncated: {e}")


_PILLOW_ERRORS = (
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombWarning,
)


def _open(data: bytes, record_id: int, path: str) -> Image.Image:
    """Pillow's image of ``data`` (header read, nothing decoded); over-limit is an error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        if im.format == "GIF" and getattr(im, "is_animated", False):
            frames = getattr(im, "n_frames", "several")
            raise ImageLoadError(
                record_id, path, f"animated GIF ({frames} frames): expected a single image"
            )
        return im
    except _PILLOW_ERRORS as e:
        raise _pillow_error(e, record_id, path) from None


def _plan(recipe: Recipe, h: int, w: int, record_id: int, epoch: int) -> Plan:
    pipe = recipe.pipeline
    if pipe is None:
        return Plan((0, 0, h, w), (h, w))
    return pipe.plan(h, w, plan_rng(pipe, recipe.seed, epoch, record_id))


def inspect(data: bytes, recipe: Recipe, *, record_id: int, path: str, epoch: int) -> Source:
    """Step one of NOTE [one decode path]: what ``data`` holds, checked, and its plan.

    Raises:
        ImageLoadError: naming the record, the path and the cause.
    """
    if not data:
        raise ImageLoadError(record_id, path, "file is empty (0 bytes), expected an image")
    kind: Kind = "pillow"
    header = jpeg.header(data) if data[:3] == jpeg.SOI else None
    if header is not None:
        kind, (h, w, grey) = "jpeg", header
    elif data[:8] == SIGNATURE:
        check_png(data, path, record_id)
        h, w, _, colour, _ = png_header(data)
        kind, grey = "png", colour in (0, 4)
    else:  # Pillow's formats, and JPEGs libjpeg-turbo leaves to Pillow (CMYK, damaged)
        im = _open(data, record_id, path)
        w, h = im.size
        grey = im.mode in ("L", "LA", "1", "I", "I;16", "I;16L", "I;16B", "I;16N", "F") or (
            im.mode == "P" and _palette_is_grey(im)
        )
    _check_pixels(h, w, record_id, path)
    return Source(record_id, path, data, kind, h, w, grey, _plan(recipe, h, w, record_id, epoch))


# -- step two: decode what the plan needs, into the row ---------------------------------------


def _palette_is_grey(im: Image.Image) -> bool:
    pal = im.getpalette()
    if not pal:
        return True
    p = np.asarray(pal, dtype=np.uint8).reshape(-1, 3)
    return bool(np.all(p[:, 0] == p[:, 1]) and np.all(p[:, 1] == p[:, 2]))


def grey_of(rgb: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L formula (NOTE [pixel rules]), HxWx1."""
    x = rgb.astype(np.uint32)
    y = (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 32768) >> 16
    return y.astype(np.uint8)[..., None]


def _pillow_pixels(src: Source) -> np.ndarray:
    """The whole image by Pillow, HxWx1 (grey) or HxWx3, by NOTE [pixel rules]."""
    try:
        im = _open(src.data, src.record_id, src.path)
        with im:
            im.load()
            mode = im.mode
            if mode.startswith("I"):  # 16-bit or 32-bit integer samples: the high byte
                arr = np.asarray(im).astype(np.int64)
                out = np.clip(arr >> 8, 0, 255).astype(np.uint8)[:, :, None]
            elif src.grey:
                out = np.array(im.convert("L"))[:, :, None]  # writable: torch warns on others
            else:
                out = np.array(im.convert("RGB"))
    except _PILLOW_ERRORS as e:
        raise _pillow_error(e, src.record_id, src.path) from None
    if src.kind == "png":  # what Pillow lets through (NOTE [png checks])
        check_rows(src.data, src.path, src.record_id)
    return np.asarray(out, dtype=np.uint8)


def _png_pixels(src: Source) -> np.ndarray:
    """A PNG's pixels: libspng for 8-bit grey/RGB(+alpha) when installed, else Pillow."""
    depth, colour = png_header(src.data)[2:4]
    if _pyspng is None or depth != 8 or colour == 3:
        return _pillow_pixels(src)
    try:  # libspng's RGB drops alpha (no compositing), and expands grey+alpha to RGB
        arr: np.ndarray = _pyspng.load(src.data, "L" if colour == 0 else "RGB")
    except (RuntimeError, ValueError) as e:
        why = str(e).rsplit(": ", 1)[-1]  # "pyspng: could not decode image: <libspng's reason>"
        raise ImageLoadError(
            src.record_id, src.path, f"image is corrupt or truncated: PNG {why} (libspng)"
        ) from None
    return arr[:, :, None] if colour == 0 else arr[:, :, :1] if colour == 4 else arr


def _pixels(src: Source, fast_dct: bool) -> tuple[np.ndarray, Plan]:
    """The pixels the plan needs and the plan within them (a region, or a DCT-scaled image)."""
    if src.kind == "jpeg":
        got = jpeg.decode(src.data, src.height, src.width, src.grey, src.plan, fast_dct)
        return got if got is not None else (_pillow_pixels(src), src.plan)
    if src.kind == "png":
        return _png_pixels(src), src.plan
    return _pillow_pixels(src), src.plan


def render(
    src: Source, recipe: Recipe, out: np.ndarray | None = None, *, epoch: int = 0
) -> np.ndarray:
    """Step two of NOTE [one decode path]: decode ``src`` as planned, into ``out`` if given.

    ``out`` is the HxWxC batch row; it must have the shape the plan gives (a mismatch is a
    :class:`~tfpathloader.errors.BatchShapeError` raised by :func:`decode_batch`).

    Raises:
        ImageLoadError: the decoder's reason, naming the record and path.
        TransformOutputError: a user callable returned something other than CxHxW uint8.
    """
    channels = recipe.channels or (1 if src.grey else 3)
    fast = recipe.jpeg_dct == "fast"
    if recipe.callback is not None:
        whole = Plan((0, 0, src.height, src.width), (src.height, src.width))
        hwc, _ = _pixels(dataclasses.replace(src, plan=whole), fast)
        return call_user_transform(recipe, _to_channels(hwc, channels), src, epoch, out)
    if (
        out is not None
        and src.kind == "jpeg"
        and jpeg.into_row(src.plan, src.height, src.width, src.grey, channels, out)
        and jpeg.decode_into(src.data, channels, out, fast)  # the decoder's pixels: the row
    ):
        return out
    pixels, plan = _pixels(src, fast)
    return finish(pixels, plan, channels, out)


def _to_channels(hwc: np.ndarray, channels: int) -> np.ndarray:
    if hwc.shape[2] == channels:
        return hwc
    return grey_of(hwc) if channels == 1 else np.repeat(hwc, 3, axis=2)


def finish(pixels: np.ndarray, plan: Plan, channels: int, out: np.ndarray | None) -> np.ndarray:
    """Crop ``plan.box`` of HxWxC pixels, resize to ``plan.size``, mirror, convert channels.

    Written into ``out`` (an HxWxC row) when given, else into a new array.
    """
    top, left, bh, bw = plan.box
    box = pixels[top : top + bh, left : left + bw]
    shape = (*plan.size, channels)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape:
        raise ValueError(f"row {out.shape} for an image of {shape}")
    if box.shape[2] == 3 and channels == 1:  # grey after the resize, on the row's own copy
        rgb = np.empty((*plan.size, 3), np.uint8)
        _resize_into(box, rgb, plan)
        out[...] = grey_of(rgb)
        return out
    if box.shape[2] == 1 and channels == 3:  # resize the one channel, then repeat it
        one = np.empty((*plan.size, 1), np.uint8)
        _resize_into(box, one, plan)
        out[...] = one
        return out
    _resize_into(box, out, plan)
    return out


def _resize_into(box: np.ndarray, dst: np.ndarray, plan: Plan) -> None:
    """``box`` resized (bilinear, antialiased as planned) and mirrored as planned, into ``dst``."""
    if box.shape[:2] != dst.shape[:2]:
        from ._private import resize_into

        resize_into(box, dst, plan.antialias)
        if plan.flip:
            _mirror(dst, dst)
    elif plan.flip:
        _mirror(box, dst)
    else:
        dst[...] = box


def _mirror(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst`` = ``src`` mirrored left to right (``src`` may be ``dst``).

    By torch when it is loaded: numpy copies a reversed HxWx3 view pixel by pixel (1.4 ms for a
    224px crop, against 0.02 ms).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        dst[...] = src[:, ::-1].copy()
    else:
        torch.from_numpy(dst).copy_(torch.from_numpy(np.ascontiguousarray(src)).flip(1))


# NOTE [user transform]: a user callable gets the decoded image as a CxHxW *view* of an HxWxC
# array (a transpose: strides, not a copy), writable, and a numpy generator seeded from (seed,
# epoch, record id, TRANSFORM). A callable that draws from torch's global generator
# (torchvision's random transforms do) is reproducible too: it runs with that generator seeded
# from (seed, epoch, record id, TORCH_SEED) inside ``torch.random.fork_rng``, so its draws depend
# on the record, not on the worker or the order of work, and the caller's own generator is left
# as it was. tf.data runs the decode in threads, so the seeding and the call hold one lock. Its
# output must be a CxHxW uint8 array: tf.data must declare a
# ``numpy_function``'s dtype before it runs, and casting there once turned a float image of 0..1
# into zeros and ones; so anything else is a TransformOutputError in both backends, in both
# on_error modes (it is a bug in the transform, not a bad image).
_TORCH_RNG_LOCK = threading.Lock()


def torch_seed(seed: int, epoch: int, record_id: int) -> int:
    """The seed of torch's global generator for one record's user transform."""
    ss = np.random.SeedSequence([int(seed), int(epoch), int(record_id), int(Stream.TORCH_SEED)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def call_user_transform(
    recipe: Recipe, hwc: np.ndarray, src: Source, epoch: int, out: np.ndarray | None
) -> np.ndarray:
    """Run the user callable on a decoded image (NOTE [user transform]); its CxHxW output."""
    assert recipe.callback is not None
    if not hwc.flags.writeable:
        hwc = hwc.copy()
    rng = record_rng(recipe.seed, epoch, src.record_id)
    torch = sys.modules.get("torch")
    if torch is None:
        result = recipe.callback(hwc.transpose(2, 0, 1), rng)
    else:
        with _TORCH_RNG_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(recipe.seed, epoch, src.record_id))
            result = recipe.callback(hwc.transpose(2, 0, 1), rng)
            if isinstance(result, torch.Tensor):
                result = result.numpy()
    arr = np.asarray(result)
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise TransformOutputError(
            src.record_id,
            src.path,
            f"the transform returned {arr.dtype} of shape {arr.shape}; expected a C x H x W "
            "uint8 array (convert to float after the batch arrives)",
        )
    if out is None:
        return arr
    out[...] = arr
    return out


# -- whole batches ---------------------------------------------------------------------------


@dataclass
class BatchResult:
    """What :func:`decode_batch` made of a batch: the rows kept, the records skipped, or why
    the batch failed (an exception to raise in the caller's process)."""

    kept: list[int]
    skipped: list[tuple[int, str, str]]
    error: BaseException | None = None


def decode_batch(
    records: Sequence[tuple[int, str, bytes | BaseException]],
    recipe: Recipe,
    out: np.ndarray,
    *,
    epoch: int,
    skip: bool,
) -> BatchResult:
    """Decode a batch into the rows of ``out`` (``[B, H, W, C]``), in order.

    Args:
        records: ``(record id, path, bytes)`` per record, or an exception in place of the bytes
            when reading failed (an :class:`ImageLoadError` from the reader).
        recipe: How every record is decoded.
        out: The batch buffer; kept records fill its first rows.
        epoch: The epoch, for the per-record generators.
        skip: ``on_error="skip"``: leave out records that fail, and list them.
    """
    # Every record is inspected (header, checks, plan) before any is decoded, the outcome still
    # the one of taking them in order: planned between two decodes, a record's plan cost 0.11
    # ms of CPU (the decoder had pushed the interpreter out of the caches), in a row 0.03
    # (benchmarks/crop_cost.py); the photos' crop 7% less CPU (benchmarks/before_after.py).
    kept: list[int] = []
    skipped: list[tuple[int, str, str]] = []
    for rid, src in [_inspected(r, recipe, epoch) for r in records]:
        row = out[len(kept)]
        try:
            if isinstance(src, BaseException):
                raise src
            if recipe.callback is None:
                shape = (*src.plan.size, recipe.channels or (1 if src.grey else 3))
                if shape != row.shape:
                    return BatchResult(kept, skipped, _shape_error(src, shape, out, kept))
                render(src, recipe, row, epoch=epoch)
            else:  # the callable's output shape is known once it ran
                got = render(src, recipe, epoch=epoch)
                if got.shape != row.shape:
                    return BatchResult(kept, skipped, _shape_error(src, got.shape, out, kept))
                row[...] = got
        except ImageLoadError as e:
            if not skip:
                return BatchResult(kept, skipped, e)
            skipped.append((e.record_id, e.path, e.cause))
            continue
        except TransformOutputError as e:  # a bug in the transform, not a bad image
            return BatchResult(kept, skipped, e)
        kept.append(rid)
    return BatchResult(kept, skipped)


def _inspected(
    record: tuple[int, str, bytes | BaseException], recipe: Recipe, epoch: int
) -> tuple[int, Source | BaseException]:
    """A record inspected, or the error that refused it (raised in its turn)."""
    rid, path, data = record
    if isinstance(data, BaseException):
        return rid, data
    try:
        return rid, inspect(data, recipe, record_id=rid, path=path, epoch=epoch)
    except ImageLoadError as e:
        return rid, e


def _shape_error(
    src: Source, shape: tuple[int, ...], out: np.ndarray, kept: list[int]
) -> BatchShapeError:
    first = f"record {kept[0]} has" if kept else "the loader's first record has"
    return BatchShapeError(
        src.record_id,
        src.path,
        f"record {src.record_id} ({src.path}) has shape {tuple(shape)} but {first} "
        f"{tuple(out.shape[1:])}: images of one batch must have one size; pass "
        "size=(height, width) to resize them",
    )


# -- one image -------------------------------------------------------------------------------


def decode_image(
    data: bytes,
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    path: str = "<bytes>",
    record_id: int = -1,
    jpeg_dct: Literal["accurate", "fast"] = "accurate",
) -> np.ndarray:
    """Decode encoded image bytes to an ``H x W x C`` uint8 array, as the loaders do.

    Args:
        data: JPEG, PNG or any format Pillow reads.
        channels: 1 (grey) or 3 (RGB); ``None`` keeps grey as 1 and everything else as 3.
        size: ``(height, width)`` to resize to, or ``None`` to keep the size.
        path, record_id: Named in the error if decoding fails.
        jpeg_dct: libjpeg's ``"accurate"`` (default) or ``"fast"`` integer IDCT.

    Raises:
        ImageLoadError: if the bytes are not a decodable image.
    """
    from ..transforms import Resize

    recipe = Recipe(channels, Resize(size) if size is not None else None, jpeg_dct=jpeg_dct)
    src = inspect(data, recipe, record_id=record_id, path=path, epoch=0)
    return render(src, recipe)


def load_image(
    path: str | os.PathLike[str],
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    record_id: int = -1,
    reader: FileReader | None = None,
) -> np.ndarray:
    """Read and decode the image at ``path`` (see :func:`decode_image`, :func:`read_file`)."""
    p = os.fspath(path)
    data = read_file(p, record_id, reader)
    return decode_image(data, channels=channels, size=size, path=p, record_id=record_id)

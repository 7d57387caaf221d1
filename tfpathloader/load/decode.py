"""Read and decode one image with Pillow into uint8 pixels, the same way in every process.

NOTE [pixel rules]: both backends follow these rules, so a PNG gives identical pixels in PyTorch
and in tf.data: 16-bit samples keep their high byte; palette images expand through their
palette; alpha is dropped (not composited); RGB becomes grey by Pillow's ITU-R 601-2 integer
formula ``(19595 R + 38470 G + 7471 B + 32768) >> 16``; grey becomes RGB by repetition.
Resizing (optional) is bilinear.
"""

from __future__ import annotations

import io
import os
import struct
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImageLoadError
from ..storage import is_url, read_url
from ._png_rules import check_png, check_stream
from .files import FileReader

__all__ = ["check_bytes", "decode_image", "load_image", "read_file"]


def read_file(path: str, record_id: int = -1, reader: FileReader | None = None) -> bytes:
    """The bytes of ``path``; an :class:`ImageLoadError` says why they could not be read.

    Only regular files within the size limit are read, without ever blocking (see NOTE
    [hostile files] in :mod:`tfpathloader.load.files`); ``reader`` sets the limit and the
    root rule (default: 256 MiB, no root rule). A PNG whose chunk checksums do not match is
    refused here (see NOTE [png checksums]).
    """
    if is_url(path):  # s3://, gs://, https://...: tfpathloader.storage (retries, timeouts)
        data = read_url(path, record_id)
    else:
        data = (reader or _DEFAULT_READER).read(path, record_id)
    check_bytes(data, path, record_id)
    return data


_DEFAULT_READER = FileReader()
_PNG = b"\x89PNG\r\n\x1a\n"


# NOTE [png checksums]: libpng (tf.io) refuses a PNG whose IDAT checksum is wrong and ignores a
# bad one in an ancillary chunk; Pillow refuses a bad ancillary chunk before the pixels and
# never checks IDAT's. So either backend refused what the other loaded. Every chunk's CRC is
# checked here, on the bytes both backends read, which is what a careful reader does anyway
# (a flipped bit in the pixel data of a PNG is otherwise silent). It costs about a microsecond
# per small PNG (zlib.crc32 runs at GB/s; the loop is the cost). The same walk enforces the
# structural rules on which Pillow and libpng part (NOTE [png rules] in ``_png_rules``).
def check_bytes(data: bytes, path: str = "<bytes>", record_id: int = -1) -> None:
    """Refuse what either decoder would refuse but the other might not: bad PNG checksums,
    malformed PNG structure (NOTE [png rules])."""
    if data[:8] == _PNG:
        check_png(data, path, record_id)


def _to_channels(im: Image.Image, channels: int | None) -> np.ndarray:
    """Pixels of ``im`` as HxWxC uint8 with ``channels`` channels (``None``: 1 or 3, as stored)."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit samples: keep the high byte (what libpng does for tf.io, too).
        arr = np.asarray(im).astype(np.int64)
        grey = np.clip(arr >> 8, 0, 255).astype(np.uint8)[:, :, None]
        return grey if channels in (None, 1) else np.repeat(grey, 3, axis=2)
    if mode in ("L", "LA", "1", "F") or (mode == "P" and _palette_is_grey(im)):
        grey = np.asarray(im.convert("L"))[:, :, None]
        return grey if channels in (None, 1) else np.repeat(grey, 3, axis=2)
    rgb = im.convert("RGB")
    if channels == 1:
        return np.asarray(rgb.convert("L"))[:, :, None]
    return np.asarray(rgb)


def _palette_is_grey(im: Image.Image) -> bool:
    pal = im.getpalette()
    if not pal:
        return True
    p = np.asarray(pal, dtype=np.uint8).reshape(-1, 3)
    return bool(np.all(p[:, 0] == p[:, 1]) and np.all(p[:, 1] == p[:, 2]))


def _formats(data: bytes) -> tuple[str, ...] | None:
    """Pillow's format for the common signatures (skips probing every plugin), else all."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ("PNG",)
    if data[:3] == b"\xff\xd8\xff":
        return ("JPEG",)
    return None


def decode_image(
    data: bytes,
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    path: str = "<bytes>",
    record_id: int = -1,
) -> np.ndarray:
    """Decode encoded image bytes to an ``H x W x C`` uint8 array.

    Args:
        data: PNG, JPEG or any format Pillow reads.
        channels: 1 (grey) or 3 (RGB); ``None`` keeps grey as 1 and everything else as 3.
        size: ``(height, width)`` to resize to (bilinear), or ``None`` to keep the size.
        path, record_id: Named in the error if decoding fails.

    Raises:
        ImageLoadError: if the bytes are not a decodable image.
    """
    return as_array(
        *decode_pixels(data, channels=channels, size=size, path=path, record_id=record_id)
    )


Pixels = tuple["bytes | np.ndarray", tuple[int, ...]]


def decode_pixels(
    data: bytes,
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    path: str = "<bytes>",
    record_id: int = -1,
) -> Pixels:
    """:func:`decode_image`'s pixels as ``(buffer, (H, W, C))``, the buffer C-ordered uint8.

    The buffer is Pillow's own bytes for grey and RGB images (a uint8 array for the rest), so
    a loader copies them into its batch once, without making an array per image first.
    """
    try:
        with warnings.catch_warnings():
            # Over Pillow's pixel limit is an error here, not a warning to scroll past.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_formats(data)) as im:
                if im.format == "GIF" and getattr(im, "is_animated", False):
                    raise ImageLoadError(
                        record_id,
                        path,
                        f"animated GIF ({im.n_frames} frames): expected a single image",
                    )
                im.load()
                mode, (w, h) = im.mode, im.size
                # The common cases without an array: grey or RGB, kept as stored.
                if mode == "L" and channels in (None, 1):
                    pixels: bytes | np.ndarray = im.tobytes()
                    shape: tuple[int, ...] = (h, w, 1)
                elif mode == "RGB" and channels in (None, 3):
                    pixels, shape = im.tobytes(), (h, w, 3)
                else:
                    pixels = _to_channels(im, channels)
                    shape = pixels.shape
        if data[:8] == _PNG:  # what Pillow does not check and libpng does (NOTE [png rules])
            check_stream(data, path, record_id)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(
            record_id, path, f"image is larger than Pillow's decompression-bomb limit ({e})"
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(
            record_id, path, "not a recognized image format (cannot identify image file)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(record_id, path, f"image is corrupt or truncated: {e}") from None
    except (IndexError, struct.error) as e:  # a plugin reading past a short field
        raise ImageLoadError(
            record_id, path, f"image is corrupt or truncated: {type(e).__name__}: {e}"
        ) from None
    if size is not None and shape[:2] != tuple(size):
        pixels = _resize(as_array(pixels, shape), size)
        shape = pixels.shape
    return pixels, shape


def _check_pixels(h: int, w: int, record_id: int, path: str) -> None:
    """Pillow's decompression-bomb rule on a header's size, in Pillow's words (decode_pixels')."""
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


def _grey(rgb: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L formula (NOTE [pixel rules])."""
    x = rgb.astype(np.uint32)
    y = (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 32768) >> 16
    return y.astype(np.uint8)[..., None]


def as_array(pixels: bytes | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """:func:`decode_pixels`' result as an ``H x W x C`` array (a view of the bytes)."""
    if isinstance(pixels, np.ndarray):
        return pixels
    return np.frombuffer(pixels, dtype=np.uint8).reshape(shape)


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if arr.shape[2] == 1:
        out = Image.fromarray(arr[:, :, 0]).resize((w, h), Image.Resampling.BILINEAR)
        return np.asarray(out)[:, :, None]
    return np.asarray(Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR))


def load_image(
    path: str | os.PathLike[str],
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    record_id: int = -1,
    reader: FileReader | None = None,
) -> np.ndarray:
    """Read and decode the image at ``path`` (see :func:`decode_image`, :func:`read_file`)."""
    return as_array(
        *load_pixels(path, channels=channels, size=size, record_id=record_id, reader=reader)
    )


def load_pixels(
    path: str | os.PathLike[str],
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    record_id: int = -1,
    reader: FileReader | None = None,
) -> Pixels:
    """Read and decode the image at ``path`` (see :func:`decode_pixels`, :func:`read_file`)."""
    p = os.fspath(path)
    return decode_pixels(
        read_file(p, record_id, reader), channels=channels, size=size, path=p, record_id=record_id
    )

"""Stage three: read and decode the images of each batch, in PyTorch workers or tf.data."""

from __future__ import annotations

from .decode import decode_image, load_image
from .loader import Loader, make_loader

__all__ = ["Loader", "decode_image", "load_image", "make_loader"]

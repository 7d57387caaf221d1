"""Decode-aware training transforms: torchvision's names, planned from the image header.

A pipeline such as ``Compose([RandomResizedCrop(224), RandomHorizontalFlip()])`` does not touch
pixels itself. For each record it *plans*, from the image's size alone (read from the file
header before decoding), one source box, one output size and one mirror flag; the loader then
decodes only what the box needs and resizes it straight into the batch:

    >>> from tfpathloader import make_loader, transforms as T
    >>> loader = make_loader(backend="torch", index=index, batch_size=256, num_workers=2,
    ...                      transform=T.Compose([T.RandomResizedCrop(224),
    ...                                           T.RandomHorizontalFlip()]))

NOTE [transform seeding]: every random draw comes from ``default_rng([seed, epoch, record id,
TRANSFORM_STREAM])``, so a record's box and flip depend only on the loader's seed, the epoch and
the record: not on the worker count, the backend, or which worker decodes it. Both backends plan
with this pure numpy module and decode with the one decode path, so they deliver the same pixels.
The draws follow torchvision's algorithms (``RandomResizedCrop.get_params``: ten tries of area
and log-ratio, then a centre-crop fallback) with numpy's generator instead of torch's: the
boxes have torchvision's distribution, not its exact values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CenterCrop",
    "Compose",
    "Plan",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "Transform",
    "check_pipeline",
    "plan_rng",
    "record_rng",
]

# Stream.TRANSFORM of tfpathloader.order.spec (not imported: this module imports nothing of ours).
_TRANSFORM_STREAM = 3


@dataclass(frozen=True)
class Plan:
    """What to do with one image: a source box, an output size, a mirror flag.

    Attributes:
        box: ``(top, left, height, width)`` in source pixels, inside the image.
        size: ``(height, width)`` of the output.
        flip: Mirror the output left to right.
        antialias: Resize with an antialiasing filter when shrinking (torchvision's default).
    """

    box: tuple[int, int, int, int]
    size: tuple[int, int]
    flip: bool = False
    antialias: bool = True


@dataclass
class _View:
    """The image as the pipeline sees it so far: a float box of the source, shown at ``size``."""

    top: float
    left: float
    height: float
    width: float
    size: tuple[int, int]
    flip: bool = False
    antialias: bool = True

    def crop(self, top: float, left: float, h: float, w: float) -> None:
        """Keep the region (top, left, h, w) of the current view, in view pixels."""
        sy, sx = self.height / self.size[0], self.width / self.size[1]
        if self.flip:  # view x counts from the source's right edge
            left = self.size[1] - left - w
        self.top, self.left = self.top + top * sy, self.left + left * sx
        self.height, self.width = h * sy, w * sx
        self.size = (max(1, round(h)), max(1, round(w)))


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        pair = (int(size), int(size))
    elif isinstance(size, Sequence) and len(size) == 2:
        pair = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"{name}: size must be an int or (height, width), got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"{name}: size must be positive, got {size!r}")
    return pair


class Transform:
    """Base of the decode-aware transforms: :meth:`apply` updates a view of the image."""

    # Whether apply() draws from its generator. False (Resize, CenterCrop) lets the loaders skip
    # making the record's generator (NOTE [no draws]); a subclass draws unless it says not.
    random: bool = True

    def apply(self, view: _View, rng: np.random.Generator) -> None:  # pragma: no cover
        raise NotImplementedError

    @property
    def output_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of every output, or ``None`` if it depends on the image."""
        return None

    def plan(self, height: int, width: int, rng: np.random.Generator) -> Plan:
        """The plan for an image of ``height`` x ``width`` (see :class:`Plan`)."""
        view = _View(0.0, 0.0, float(height), float(width), (int(height), int(width)))
        self.apply(view, rng)
        top = min(max(0, round(view.top)), height - 1)
        left = min(max(0, round(view.left)), width - 1)
        bottom = min(height, max(top + 1, round(view.top + view.height)))
        right = min(width, max(left + 1, round(view.left + view.width)))
        return Plan((top, left, bottom - top, right - left), view.size, view.flip, view.antialias)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Compose(Transform):
    """Apply ``transforms`` in order (``torchvision.transforms.Compose``)."""

    def __init__(self, transforms: Sequence[Transform]):
        for t in transforms:
            if not isinstance(t, Transform):
                raise ValueError(
                    f"Compose takes tfpathloader.transforms only, got {type(t).__name__}; "
                    "pass a plain callable as transform= instead"
                )
        self.transforms = list(transforms)

    def apply(self, view: _View, rng: np.random.Generator) -> None:
        for t in self.transforms:
            t.apply(view, rng)

    @property
    def random(self) -> bool:  # type: ignore[override]
        return any(t.random for t in self.transforms)

    @property
    def output_size(self) -> tuple[int, int] | None:
        size = None
        for t in self.transforms:
            if isinstance(t, RandomHorizontalFlip):
                continue
            size = t.output_size
        return size


class RandomResizedCrop(Transform):
    """A random box of random area and aspect, resized to ``size`` (torchvision's algorithm).

    Args:
        size: Output ``(height, width)``, or an int for a square.
        scale: Range of the box's area as a fraction of the image's.
        ratio: Range of the box's aspect ratio (width / height), drawn log-uniformly.
        antialias: Antialias when shrinking (as torchvision's default).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        antialias: bool = True,
    ):
        self.size = _pair(size, "RandomResizedCrop")
        if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(
                f"RandomResizedCrop: need 0 < scale[0] <= scale[1] and 0 < ratio[0] <= "
                f"ratio[1], got scale={scale!r}, ratio={ratio!r}"
            )
        self.scale, self.ratio, self.antialias = tuple(scale), tuple(ratio), antialias

    def box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """``(top, left, h, w)`` of a box in a ``height`` x ``width`` image."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return top, left, h, w
        # Fallback: the largest centred box within the ratio range.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def apply(self, view: _View, rng: np.random.Generator) -> None:
        view.crop(*self.box(*view.size, rng))
        view.size, view.antialias = self.size, self.antialias

    @property
    def output_size(self) -> tuple[int, int]:
        return self.size


class RandomHorizontalFlip(Transform):
    """Mirror left to right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p!r}")
        self.p = p

    def apply(self, view: _View, rng: np.random.Generator) -> None:
        if rng.random() < self.p:
            view.flip = not view.flip


class Resize(Transform):
    """Resize to ``(height, width)``; an int matches the shorter side, keeping the aspect.

    An int size gives images of varied shapes, so a pipeline used by a loader must end with a
    fixed size (``Resize((h, w))``, ``CenterCrop`` or ``RandomResizedCrop``).
    """

    random = False

    def __init__(self, size: int | Sequence[int], antialias: bool = True):
        self.short = None
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            if size < 1:
                raise ValueError(f"Resize: size must be positive, got {size!r}")
            self.short = int(size)
            self.fixed: tuple[int, int] | None = None
        else:
            self.fixed = _pair(size, "Resize")
        self.antialias = antialias

    def apply(self, view: _View, rng: np.random.Generator) -> None:
        if self.fixed is not None:
            view.size = self.fixed
        else:
            assert self.short is not None
            h, w = view.size
            if h <= w:  # torchvision: the long side is truncated, not rounded
                view.size = (self.short, int(self.short * w / h))
            else:
                view.size = (int(self.short * h / w), self.short)
        view.antialias = self.antialias

    @property
    def output_size(self) -> tuple[int, int] | None:
        return self.fixed


class CenterCrop(Transform):
    """The centred ``(height, width)`` region (no padding: a larger crop keeps the whole
    image and resizes it to ``size``)."""

    random = False

    def __init__(self, size: int | Sequence[int]):
        self.size = _pair(size, "CenterCrop")

    def apply(self, view: _View, rng: np.random.Generator) -> None:
        h, w = view.size
        ch, cw = min(self.size[0], h), min(self.size[1], w)
        view.crop(round((h - ch) / 2), round((w - cw) / 2), ch, cw)
        view.size = self.size

    @property
    def output_size(self) -> tuple[int, int]:
        return self.size


def record_rng(seed: int, epoch: int, record_id: int) -> np.random.Generator:
    """The generator of one record's draws (see NOTE [transform seeding])."""
    return np.random.default_rng([int(seed), int(epoch), int(record_id), _TRANSFORM_STREAM])


# NOTE [no draws]: making a record's generator (``default_rng`` of four ints: a SeedSequence
# hash) costs 20-50 us, as much as planning, reading and half the resize of a photo together;
# a pipeline that draws nothing (Resize, CenterCrop: evaluation, and the tf backend's size=)
# gets this one generator instead, never drawn from. ``Transform.random`` says which.
_NO_DRAWS = np.random.default_rng(0)


def plan_rng(transform: Transform, seed: int, epoch: int, record_id: int) -> np.random.Generator:
    """The generator ``transform`` plans a record with: :func:`record_rng`, or none needed."""
    return record_rng(seed, epoch, record_id) if transform.random else _NO_DRAWS


def check_pipeline(transform: Transform) -> tuple[int, int]:
    """The pipeline's fixed output size; a ValueError if it has none (varied shapes)."""
    size = transform.output_size
    if size is None:
        raise ValueError(
            f"transform {transform!r} gives images of varied sizes, which cannot be batched: "
            "end it with RandomResizedCrop, CenterCrop or Resize((height, width))"
        )
    return size

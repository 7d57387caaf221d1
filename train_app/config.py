"""The config schema of ``train.py``: structured configs that type and validate ``conf/``.

Only ``train.py`` and this module know Hydra; ``_target_`` entries point at plain typed
factories (:func:`tfpathloader.make_loader`, :func:`train_app.models.small_cnn`,
``torch.optim.Adam``, :func:`train_app.optim.warmup_cosine`).

NOTE [schema, not an option]: the schema is stored once, as the root config ``train_schema``
that ``conf/config.yaml`` lists first. Its typed fields (``loader: LoaderConf`` ...) check every
group's YAML as it is merged (unknown keys, wrong types). Nothing is stored inside a config
group, so ``loader=`` offers only the YAML files in ``conf/loader/`` and an unknown choice lists
only those. Value ranges (``trainer.epochs >= 1`` ...) are checked by :func:`validate`, which
``train.py`` runs before anything else.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, Optional  # noqa: UP035

__all__ = ["Config", "launch_time", "register_configs", "validate"]

# NOTE: Optional[...] rather than `X | None`: OmegaConf reads these annotations at runtime.


@dataclass
class LoaderConf:
    """Keyword arguments of make_loader that the ``loader`` group chooses."""

    _target_: str = "tfpathloader.make_loader"
    backend: str = "torch"
    batch_size: int = 128
    num_workers: int = 2
    prefetch_factor: Optional[int] = None  # noqa: UP045
    persistent_workers: Optional[bool] = None  # noqa: UP045
    on_error: str = "raise"
    jpeg_dct: str = "accurate"  # or "fast": TensorFlow's default IDCT (make_loader's jpeg_dct)


@dataclass
class ShuffleConf:
    """The order: a partial :class:`tfpathloader.OrderSpec`, instantiated by ``_target_``.

    train.py completes it with ``seed``, ``loader.batch_size`` and the world size; the spec
    checks every field (NOTE [one order spec] in tfpathloader/order/spec.py).
    """

    _target_: str = "tfpathloader.OrderSpec"
    _partial_: bool = True
    shuffle: str = "global"
    permutation: str = "exact"
    buffer_size: Optional[int] = None  # noqa: UP045
    drop_last: bool = False


@dataclass
class DataConf:
    """Where the images are, and what the run evaluates on (see ``conf/data/default.yaml``)."""

    root: str = "data"
    index: str = "index.tfrecord"
    test_index: Optional[str] = "auto"  # noqa: UP045
    holdout: float = 0.1
    make_demo_if_missing: Optional[bool] = None  # noqa: UP045
    per_label: int = 7000
    channels: Optional[int] = None  # noqa: UP045
    size: Optional[list[int]] = None  # noqa: UP045


@dataclass
class ModelConf:
    """The model factory and its arguments."""

    _target_: str = "train_app.models.small_cnn"
    width: int = 32


@dataclass
class TrainerConf:
    """The loop: epochs, early stop, device, checkpoints."""

    epochs: int = 1
    max_steps: Optional[int] = None  # noqa: UP045
    lr: float = 2e-3
    weight_decay: float = 0.0
    device: str = "auto"
    distributed: bool = False
    collective_timeout_s: float = 300.0
    checkpoint_every: int = 100
    resume: Optional[str] = None  # noqa: UP045
    eval_batch_size: int = 500
    progress: bool = True


@dataclass
class Config:
    """The whole run. ``optimizer`` and ``schedule`` are free-form ``_target_`` nodes."""

    seed: int = 0
    loader: LoaderConf = field(default_factory=LoaderConf)
    shuffle: ShuffleConf = field(default_factory=ShuffleConf)
    data: DataConf = field(default_factory=DataConf)
    model: ModelConf = field(default_factory=ModelConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    optimizer: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    schedule: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006


_CHECKS: tuple[tuple[str, Any, str], ...] = (
    ("trainer.epochs", lambda v: v >= 1, "must be >= 1 (one pass over the data at least)"),
    (
        "trainer.max_steps",
        lambda v: v is None or v >= 1,
        "must be >= 1, or null for full epochs",
    ),
    ("trainer.lr", lambda v: v > 0, "must be > 0"),
    ("trainer.weight_decay", lambda v: v >= 0, "must be >= 0"),
    ("trainer.checkpoint_every", lambda v: v >= 0, "must be >= 0 (0: no checkpoints)"),
    ("trainer.eval_batch_size", lambda v: v >= 1, "must be >= 1"),
    ("loader.batch_size", lambda v: v >= 1, "must be >= 1"),
    ("loader.num_workers", lambda v: v >= 0, "must be >= 0"),
    ("data.holdout", lambda v: 0 < v < 1, "must lie in (0, 1): the share of each label held out"),
    ("data.per_label", lambda v: v >= 1, "must be >= 1"),
    (
        "data.size",
        lambda v: v is None or (len(v) == 2 and min(v) >= 1),
        "must be [HEIGHT, WIDTH] (both >= 1) or null",
    ),
    ("optimizer._target_", lambda v: bool(v), "must name an optimizer class (conf/optimizer/)"),
    ("schedule._target_", lambda v: bool(v), "must name a schedule factory (conf/schedule/)"),
)


def validate(cfg: Any) -> list[str]:
    """Value ranges the types cannot say: one line per problem, naming the key and its value.

    Args:
        cfg: The composed config (a ``DictConfig`` or anything with the same attribute paths).
    """
    problems = []
    for key, ok, rule in _CHECKS:
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if hasattr(node, "get") else getattr(node, part, None)
        try:
            good = bool(ok(node))
        except TypeError:
            good = False
        if not good:
            problems.append(f"{key}={node}: {rule}")
    return problems


def launch_time(pattern: str) -> str:
    """When this run was launched, formatted by ``pattern`` (``${launch_time:%H-%M-%S}``).

    Hydra's ``${now:...}`` is read by every process: torchrun ranks that compose their config
    either side of a second boundary each made a run folder. Every rank of one torchrun launch
    is a child of the same launcher process, so ranks format the launcher's start time instead.
    """
    return datetime.fromtimestamp(_launched()).strftime(pattern)


@functools.cache
def _launched() -> float:
    if "LOCAL_RANK" in os.environ:  # a torchrun worker
        started = _process_start(os.getppid())
        if started is not None:
            return started
    return time.time()


def _process_start(pid: int) -> float | None:
    """Start time of process ``pid`` (Linux ``/proc``), or None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def register_configs() -> None:
    """Store the schema as the root config ``train_schema``; add the ``launch_time`` resolver.

    See NOTE [schema, not an option].
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("launch_time", launch_time, replace=True)
    ConfigStore.instance().store(name="train_schema", node=Config)

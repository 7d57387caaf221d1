"""The config schema of ``train.py``: structured configs that validate ``conf/`` (needs Hydra).

Only ``train.py`` and this module know Hydra; ``_target_`` entries point at plain typed
factories (:func:`tfpathloader.make_loader`, :func:`train_app.models.small_cnn`).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

__all__ = ["Config", "launch_time", "register_configs"]

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


@dataclass
class ShuffleConf:
    """The order: ``name`` is global, buffer or none."""

    name: str = "global"
    permutation: str = "exact"
    buffer_size: Optional[int] = None  # noqa: UP045
    drop_last: bool = False


@dataclass
class DataConf:
    """Where the images are; the demo data is made there if missing."""

    root: str = "data"
    index: str = "index.tfrecord"
    test_index: str = "test.tfrecord"
    make_demo_if_missing: bool = True
    per_label: int = 7000
    channels: Optional[int] = None  # noqa: UP045
    size: Optional[list[int]] = None  # noqa: UP045


@dataclass
class ModelConf:
    _target_: str = "train_app.models.small_cnn"
    width: int = 32


@dataclass
class TrainerConf:
    epochs: int = 1
    max_steps: Optional[int] = None  # noqa: UP045
    lr: float = 2e-3
    weight_decay: float = 0.0
    device: str = "auto"
    distributed: bool = False
    checkpoint_every: int = 100
    resume: Optional[str] = None  # noqa: UP045
    eval_batch_size: int = 500
    progress: bool = True


@dataclass
class Config:
    seed: int = 0
    loader: LoaderConf = field(default_factory=LoaderConf)
    shuffle: ShuffleConf = field(default_factory=ShuffleConf)
    data: DataConf = field(default_factory=DataConf)
    model: ModelConf = field(default_factory=ModelConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)


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
    """Store the schemas as ``base_config`` and ``<group>/base_<group>``; add ``launch_time``."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("launch_time", launch_time, replace=True)

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    groups: dict[str, Any] = {
        "loader": LoaderConf,
        "shuffle": ShuffleConf,
        "data": DataConf,
        "model": ModelConf,
        "trainer": TrainerConf,
    }
    for group, node in groups.items():
        cs.store(group=group, name=f"base_{group}", node=node)

"""Worker processes of the torch backend: how many batches each keeps queued, and their shutdown."""

from __future__ import annotations

import sys
from typing import Any

import torch

from .private import shutdown_workers

__all__ = ["context_of", "default_prefetch", "start_method"]


# NOTE [worker shutdown]: DataLoader stops its workers in its iterator's __del__. If that iterator
# is freed by the cyclic garbage collector (a traceback that captured the loop's frame is enough),
# the collector may first run the finalizers of the iterator's own queues, and then every worker
# waits out a 5-second timeout for a stop message that can no longer be sent. So live iterators
# are also held here, where they stay reachable, and a weakref finalizer on the loader stops them.
_LIVE_ITERATORS: dict[int, Any] = {}


def _stop_workers(key: int) -> None:
    it = _LIVE_ITERATORS.pop(key, None)
    shutdown_workers(it)


def default_prefetch(workers: int, batch_bytes: int) -> int:
    """Batches each worker keeps queued: 4 for small batches, 2 (DataLoader's default) for big.

    NOTE [prefetch depth]: with 2 the main process, competing with busy workers for the cores, is
    often late to send the next request and workers idle: 28x28 PNGs on 2 cores went from 0.78x
    to 0.93x of the raw decode rate (and CPU use from 1.78 to 1.92 cores) with 4. Big batches
    take long enough to decode that 2 keep the workers busy: 224px JPEGs, batch 256, 2 workers,
    two epochs of 3,000, three interleaved runs each: 2,813 (2,451-2,920) images/s with 2 vs
    2,484 (2,484-3,015) with 4, and 246 vs 394 MiB USS (6 vs 10 slots of 38.5 MB). So 4 only
    while the 4 batches per worker hold at most 64 MiB in all.
    """
    return 4 if workers * 4 * batch_bytes <= 64 * 2**20 else 2


# NOTE [start method]: workers are forked (fast, and the slot pool's anonymous mapping is
# inherited) unless forking is unsafe. Remote roots (NOTE [remote workers]): the object-store
# client runs a tokio runtime in this process (record 0 was read to learn the image shape);
# forking it leaves the children hung and the parent crashing, so remote workers are spawned.
# TensorFlow: once imported it runs runtime threads (tf.data's among them), and a fork copies
# their locks in whatever state they are; a forked worker beside live tf.data threads hung at
# start-up (py-spy: in torch.manual_seed -> traceback.format_stack). So when "tensorflow" is
# in sys.modules (both backends in one process), workers come from a forkserver, a clean
# process started once that preloads torch and the torch backend, so each worker starts in
# milliseconds. The slot pool reaches such workers with the dataset's pickle (NOTE [slots
# without fork]).
# The choice is made when the loader is made: import TensorFlow first to get it. As with spawn,
# a forkserver worker imports the script's main module: scripts need `if __name__ == "__main__"`.
# A forkserver's workers are not this process's children, so no SIGCHLD reports a dead one in
# the middle of a training step: its death is found at the next batch (LoaderWorkerError).
def start_method(*, remote: bool) -> Any:
    """The multiprocessing context for DataLoader workers: "fork", "spawn", a forkserver
    context, or None for torch's default (see NOTE [start method])."""
    methods = torch.multiprocessing.get_all_start_methods()
    if remote:
        return "spawn"
    if "tensorflow" in sys.modules and "forkserver" in methods:
        ctx = torch.multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "tfpathloader.load.torch_backend"])
        return ctx
    if "tensorflow" in sys.modules:
        return "spawn"
    return "fork" if "fork" in methods else None


def context_of(method: Any) -> Any:
    """The multiprocessing context of a DataLoader ``multiprocessing_context`` value."""
    return (
        method if not isinstance(method, str | None) else torch.multiprocessing.get_context(method)
    )

"""The private PyTorch APIs the torch backend relies on still exist and behave as it expects.

Each one is used only in ``tfpathloader/load/_torch/private.py`` (NOTE [private torch API]);
a torch upgrade that renames or changes one fails here, loudly, by name.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.utils.data
from torch.utils.data import dataloader as dl

from tfpathloader.load._torch import private


def test_shared_storage_is_shared_memory_of_the_asked_size():
    storage = private.new_shared_storage(4096)
    assert storage.nbytes() == 4096 and storage.is_shared()


def test_multiprocessing_iterator_has_a_shutdown_method():
    assert callable(getattr(dl._MultiProcessingDataLoaderIter, "_shutdown_workers", None)), (
        "torch removed _MultiProcessingDataLoaderIter._shutdown_workers: see "
        "NOTE [worker shutdown] in tfpathloader/load/torch_backend.py"
    )


def test_persistent_dataloader_keeps_its_iterator_where_we_drop_it():
    loader = torch.utils.data.DataLoader(
        list(range(4)), batch_size=2, num_workers=1, persistent_workers=True
    )
    list(loader)
    assert getattr(loader, "_iterator", None) is not None, "DataLoader._iterator moved"
    it = loader._iterator
    private.drop_persistent_iterator(loader)
    assert loader._iterator is None
    private.shutdown_workers(it)
    assert not any(w.is_alive() for w in it._workers)


def test_dataloader_fetches_whole_batches_through_getitems():
    # The batch fast path: DataLoader's map-style fetcher calls dataset.__getitems__(ids).
    source = inspect.getsource(torch.utils.data._utils.fetch._MapDatasetFetcher.fetch)
    assert "__getitems__" in source

    class Batched(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitems__(self, ids):
            return {"ids": np.asarray(ids)}

    loader = torch.utils.data.DataLoader(Batched(), batch_size=3, collate_fn=lambda b: b)
    assert [b["ids"].tolist() for b in loader] == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("method", ["fork"])
def test_fork_start_method_is_offered(method):
    import torch.multiprocessing as mp

    assert method in mp.get_all_start_methods()


@pytest.mark.parametrize("antialias", [True, False])
def test_resize_into_writes_interpolates_pixels_into_the_given_row(antialias):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    crop = torch.from_numpy(image[3:30, 5:50])  # a strided view, as a crop box is
    batch = np.zeros((2, 11, 16, 3), np.uint8)
    private.resize_into(crop, torch.from_numpy(batch[1]), antialias)
    want = torch.nn.functional.interpolate(
        crop.permute(2, 0, 1)[None], size=(11, 16), mode="bilinear", antialias=antialias
    )[0].permute(1, 2, 0)
    np.testing.assert_array_equal(batch[1], want.numpy())
    assert not batch[0].any()

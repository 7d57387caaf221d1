"""``tfpathloader bench``: our loaders and their peers against the machine's decode limit.

Rows, all over *the same files* (the first images of the seeded global order), each in its
own process (see NOTE [bench method] in :mod:`.driver`):

- ``raw``: the decode limit: the files decoded (the loaders' own Pillow decode) in a tight loop
  by as many processes as the loaders use; ``raw-lean``: one ``os.read`` per file, then decode.
- ``torch``, ``tf``: this project's loaders.
- Peers, each written the way its own docs teach (see :mod:`.rows`): ``baseline`` (a plain
  ``DataLoader`` over a list of paths), ``stateful`` (torchdata's ``StatefulDataLoader``),
  ``grain`` (``MapDataset`` + ``mp_prefetch``), ``tf-hand`` (hand-written tf.data). A peer
  whose package is missing is reported as skipped (``pip install 'tfpathloader[bench]'``).

Columns: images/s and its ratio to the raw rate of the same round (median over rounds),
seconds to the first batch of an epoch, cold start (build + first batch), peak USS of the row's
processes.
"""

from ..photos import make_jpeg_set, make_photo_set
from .driver import ROWS, format_bench_table, run_bench, uss_mib

__all__ = ["ROWS", "format_bench_table", "make_jpeg_set", "make_photo_set", "run_bench", "uss_mib"]

"""``tfpathloader bench``: our loaders against the machine's decode limit, on a user's own index.

Rows, all over *the same files* (the first images of the seeded global order), each in its
own process (see NOTE [bench method] in :mod:`.driver`):

- ``raw``: the decode limit: the files decoded (the loaders' own Pillow decode) in a tight loop
  by as many processes as the loaders use; ``raw-lean``: one ``os.read`` per file, then decode.
- ``torch``, ``tf``: this project's loaders; ``torch-fast``, ``tf-fast``: the same at tf.data's
  pixel defaults (NOTE [equal pixels] in :mod:`.rows`).

The loaders people write instead (plain DataLoader, torchdata, Grain, hand-written tf.data) are
rows of the same kind in ``benchmarks/peers.py``, which runs them with these through this driver
(``catalog=``) for the README's Speed table.

Columns: images/s and its ratio to the raw rate of the same round (median over rounds),
seconds to the first batch of an epoch, cold start (build + first batch), peak memory and CPU
milliseconds per image of the row's processes.
"""

from .driver import DEFAULT_ROWS, format_bench_table, run_bench
from .rows import ROWS, Row, RowSpec

__all__ = ["DEFAULT_ROWS", "ROWS", "Row", "RowSpec", "format_bench_table", "run_bench"]

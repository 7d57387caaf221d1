"""``tfpathloader bench``: our loaders against the machine's decode limit, on a user's own index.

Rows (:mod:`.rows`) run over *the same files*, each in its own process, in interleaved rounds
(NOTE [bench method] in :mod:`.driver`): ``raw`` (the files decoded flat out by as many
processes as the loaders use), ``raw-lean``, ``torch`` and ``tf``. ``benchmarks/peers.py`` runs
the loaders people write instead through the same driver (``catalog=``).
"""

from .driver import DEFAULT_ROWS, format_bench_table, run_bench
from .rows import ROWS, Row, RowSpec

__all__ = ["DEFAULT_ROWS", "ROWS", "Row", "RowSpec", "format_bench_table", "run_bench"]

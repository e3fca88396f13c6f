"""Hot loops behind the search pipeline: exact Hamming top-k, float query x bit-plane codes top-k
(asymmetric scoring with popcounts) and fused gather + dot rescoring.

The native extension (C, built at install) provides AVX-512 VPOPCNTDQ, AVX2 and portable paths,
chosen at run time by CPU; :mod:`.numpy_backend` is the pure-numpy reference and the fallback when
the extension is missing. See :mod:`.backend` for forcing a path and setting the thread count.
"""

from __future__ import annotations

from .backend import (
    BACKENDS,
    available_backends,
    get_backend,
    get_num_threads,
    set_backend,
    set_num_threads,
    use_backend,
)
from .dispatch import (
    blocks_topk,
    dot_rows,
    dot_rows_blocks,
    hamming_topk,
    ivf_probe,
    ivf_scan,
    nibble_scan,
    nibble_topk,
    planes_topk,
    table_topk,
)
from .numpy_backend import PAD_DISTANCE, gather_rows, hamming_distances
from .prefetch import prefetch_rows

__all__ = [
    "BACKENDS",
    "PAD_DISTANCE",
    "available_backends",
    "blocks_topk",
    "dot_rows",
    "dot_rows_blocks",
    "gather_rows",
    "get_backend",
    "get_num_threads",
    "hamming_distances",
    "hamming_topk",
    "ivf_probe",
    "ivf_scan",
    "nibble_scan",
    "nibble_topk",
    "planes_topk",
    "prefetch_rows",
    "set_backend",
    "set_num_threads",
    "table_topk",
    "use_backend",
]

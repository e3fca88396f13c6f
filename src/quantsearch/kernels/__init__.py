"""Hot loops behind the search pipeline. One backend per module; this module picks one.

Only the portable numpy backend exists so far; native backends plug in here with the same
signatures.
"""

from __future__ import annotations

from .numpy_backend import PAD_DISTANCE, gather_rows, hamming_distances, hamming_topk

__all__ = ["PAD_DISTANCE", "gather_rows", "hamming_distances", "hamming_topk"]

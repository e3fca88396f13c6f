"""Child process of test_crash.py: writes to an index in a loop until the parent kills it.

Usage: ``python crash_child.py {add|delete|compact} INDEX_DIR FIRST_BATCH LAST_BATCH``

Prints ``READY`` once the index is open, then for each batch b in [FIRST_BATCH, LAST_BATCH) adds
(or deletes) the batch's documents and writes ``ACK b`` after the call returned; then sleeps until
it is killed. In
``compact`` mode each step adds batch b, deletes its first half and compacts the index.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

BATCH = 64
DIM = 40
SEED = 2024


def batch_ids(b: int) -> list[int]:
    """Ids of batch ``b``: ``b * BATCH ... b * BATCH + BATCH - 1``."""
    return list(range(b * BATCH, (b + 1) * BATCH))


def batch_vectors(b: int) -> np.ndarray:
    """Seeded unit vectors (BATCH, DIM) float32 of batch ``b``."""
    x = np.random.default_rng([SEED, b]).standard_normal((BATCH, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def batch_texts(b: int) -> list[str]:
    return [f"doc {i}" for i in batch_ids(b)]


def batch_metadata(b: int) -> list[dict[str, int]]:
    return [{"batch": b, "id": i} for i in batch_ids(b)]


def main(argv: list[str]) -> None:
    from quantsearch import Index

    mode, path, first, last = argv[0], argv[1], int(argv[2]), int(argv[3])
    index = Index.open(path)
    os.write(1, b"READY\n")
    for b in range(first, last):
        if mode in ("add", "compact"):
            index.add(batch_vectors(b), ids=batch_ids(b), texts=batch_texts(b), metadata=batch_metadata(b))
        if mode == "compact":
            index.delete(batch_ids(b)[: BATCH // 2])
            index.compact()
        if mode == "delete":
            index.delete(batch_ids(b))
        os.write(1, f"ACK {b}\n".encode())  # one write: a kill never leaves half a line
    time.sleep(3600)  # all done: wait for the kill, so that the parent always kills a live writer


if __name__ == "__main__":
    main(sys.argv[1:])

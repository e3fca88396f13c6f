"""Helpers shared by the kernel tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def assert_releases_gil(call: Callable[[], object]) -> None:
    """Fail unless another Python thread runs during the middle half of ``call()``.

    The other thread timestamps its loop while the call runs. With the GIL held for the whole call
    it could not run inside it at all (a switch just before the call can let it run for one switch
    interval, ~5 ms, so only the middle half of the call is examined). ``call`` must take > 40 ms.
    """
    stop = threading.Event()
    stamps: list[float] = []

    def tick() -> None:
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.001)

    worker = threading.Thread(target=tick)
    worker.start()
    try:
        time.sleep(0.02)
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
    finally:
        stop.set()
        worker.join()
    duration = t1 - t0
    inside = [t for t in stamps if t0 + duration / 4 < t < t1 - duration / 4]
    assert duration > 0.04, duration
    assert len(inside) >= 5, (len(inside), duration)

"""Does the server keep answering while idle connections pile up under a small descriptor limit?

Starts ``quantsearch serve`` on a small index with ``ulimit -n`` = ``--fd-limit`` (soft and hard),
then, in the same run: times ``--requests`` GET /stats with no idle connection open (baseline), opens
``--idle`` connections that never send a byte, and times the same requests again. Prints the median
latency of both, their ratio, how many requests failed, how many idle connections the server closed
to make room, and the size of the server's log (a flood of "Too many open files" would show there).

    python benchmarks/idle_connections.py [--idle 1000] [--fd-limit 1024] [--requests 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from quantsearch import Index

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start(index: Path, log: Path, fd_limit: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    cmd = [
        sys.executable,
        "-m",
        "quantsearch",
        "serve",
        str(index),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit)
    url = f"http://{HOST}:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(log.read_text()[-2000:])


def timed(url: str, n: int) -> tuple[list[float], int]:
    times, failed = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            ok = httpx.get(f"{url}/stats", timeout=10).status_code == 200
        except httpx.TransportError:
            ok = False
        times.append((time.perf_counter() - t0) * 1e3)
        failed += not ok
    return times, failed


def one_run(index: Path, idle: int, fd_limit: int, requests: int) -> dict[str, float]:
    log = index.parent / f"server-{time.time_ns()}.log"
    proc, url = start(index, log, fd_limit)
    sockets: list[socket.socket] = []
    try:
        base, base_failed = timed(url, requests)
        port = int(url.rsplit(":", 1)[1])
        for _ in range(idle):
            sockets.append(socket.create_connection((HOST, port), timeout=10))
        time.sleep(0.5)
        loaded, failed = timed(url, requests)
        closed = 0
        for s in sockets:
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):  # still open: nothing to read
                closed += s.recv(1) == b""
    finally:
        for s in sockets:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "base_ms": statistics.median(base),
        "idle_ms": statistics.median(loaded),
        "failed": base_failed + failed,
        "closed": closed,
        "log_bytes": log.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--fd-limit", type=int, default=1024)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.idle + 100:  # this process holds the idle connections' other ends
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.idle + 1000), hard))
    with tempfile.TemporaryDirectory(dir=os.environ.get("QUANTSEARCH_SCRATCH")) as tmp:
        x = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
        Index.build(Path(tmp) / "idx", x).close()
        runs = [one_run(Path(tmp) / "idx", args.idle, args.fd_limit, args.requests) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"{args.idle} idle connections, fd limit {args.fd_limit}, {args.requests} GET /stats per phase, "
          f"median of {args.runs} runs")  # fmt: skip
    print(f"  no idle connections   {med['base_ms']:7.2f} ms")
    print(
        f"  {args.idle} idle open     {med['idle_ms']:7.2f} ms   ratio {med['idle_ms'] / med['base_ms']:.2f}x"
    )
    print(f"  failed requests       {int(max(r['failed'] for r in runs))} (worst run)")
    print(f"  idle closed by server {int(med['closed'])} (to stay under the cap)")
    print(f"  server log            {int(max(r['log_bytes'] for r in runs))} bytes (largest run)")


if __name__ == "__main__":
    main()

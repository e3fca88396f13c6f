"""Run the real ``quantsearch serve`` in a subprocess on a free loopback port, for the server tests."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

SRC = Path(__file__).resolve().parents[1] / "src"
REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # every test talks to loopback only


def free_port() -> int:
    """A TCP port that was free on the loopback interface a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def artifacts_dir() -> Path:
    """Where tests leave files for people to look at: $QUANTSEARCH_ARTIFACTS or <repo>/artifacts."""
    path = Path(os.environ.get("QUANTSEARCH_ARTIFACTS", REPO / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class ServerProcess:
    """``python -m quantsearch serve INDEX`` as a child process; its output goes to ``log``.

    Use as a context manager (stopped with SIGTERM at exit) or call :meth:`start` / :meth:`stop` /
    :meth:`kill` yourself.
    """

    def __init__(
        self,
        index_dir: Path,
        log: Path,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        extra_args: Sequence[str] = (),
        fd_limit: int | None = None,
    ) -> None:
        self.index_dir = index_dir
        self.extra_args = list(extra_args)
        self.fd_limit = fd_limit
        self.log = log
        self.api_key = api_key
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(), timeout=60.0, **kwargs)

    def start(self) -> ServerProcess:
        for _attempt in range(3):  # the free port may be taken by someone else in between
            self.port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "quantsearch",
                "serve",
                str(self.index_dir),
                "--port",
                str(self.port),
            ]
            cmd += ["--log-level", "warning", *self.extra_args]
            env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            if self.api_key:
                env["QUANTSEARCH_API_KEY"] = self.api_key  # not on the command line, where ps shows it
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=self._limit_fds
                )
            if self._wait_ready():
                return self
            if "address already in use" not in self.log.read_text(errors="replace").lower():
                break
        raise RuntimeError(
            f"the server did not start; its log:\n{self.log.read_text(errors='replace')[-4000:]}"
        )

    def _limit_fds(self) -> None:
        """In the child: soft and hard descriptor limit ``fd_limit`` (as under ``ulimit -n``)."""
        if self.fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.fd_limit, self.fd_limit))

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                # any answer means it serves (a Host check may refuse the loopback address)
                if httpx.get(f"{self.url}/healthz", timeout=2.0).status_code in (200, 400):
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        return False

    def stop(self) -> int:
        """SIGTERM (graceful shutdown) and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=30)

    def kill(self) -> int:
        """SIGKILL: no shutdown code runs; returns the exit status (-9)."""
        assert self.proc is not None
        self.proc.kill()
        return self.proc.wait(timeout=30)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()

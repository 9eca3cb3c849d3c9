"""Fixtures for ledger tests: a real redis-server on a free loopback port, and each backend."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from services import binary_or_skip

BACKENDS = ("memory", "sqlite", "redis")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_server_or_skip() -> str:
    """The redis-server binary; skip (or fail when CI requires services) without it."""
    return binary_or_skip("redis-server", install="redis-server")


class RedisServer:
    """A throwaway redis-server (no persistence) that tests can stop, restart and freeze."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, namespace: str | None = None, **options: str) -> str:
        """A ledger URI on this server, in a fresh namespace unless one is given."""
        query = {"namespace": namespace or uuid.uuid4().hex[:12], **options}
        args = "&".join(f"{k}={v}" for k, v in query.items())
        return f"redis://127.0.0.1:{self.port}/0?{args}"

    def client(self) -> redis.Redis:
        """A plain redis-py client, for looking at keys."""
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until it answers."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (its data is gone: nothing is persisted)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (calls time out)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: answer again, with all data intact."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart by namespace."""
    server = RedisServer(_redis_server_or_skip(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test, which it may stop, restart or freeze."""
    server = RedisServer(_redis_server_or_skip(), tmp_path)
    server.start()
    yield server
    server.stop()


def backend_uri(backend: str, request: pytest.FixtureRequest, directory: Path) -> str:
    """A fresh ledger URI of ``backend``: a new file, or a new Redis namespace."""
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{directory / f'ledger-{uuid.uuid4().hex[:8]}.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each of the three backends in turn."""
    return str(request.param)


@pytest.fixture
def ledger_uri(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ledger URI of the current backend."""
    return backend_uri(backend, request, tmp_path)

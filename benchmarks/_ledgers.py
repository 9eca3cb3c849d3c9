"""Ledgers for the benchmarks: a temporary SQLite file and a private loopback redis-server."""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from budgetwarden import open_ledger
from budgetwarden.ledger.base import Charge


def probe(uri: str) -> str | None:
    """None when a ledger at ``uri`` reserves and commits, else why not."""
    try:
        ledger = open_ledger(uri)
    except Exception as exc:  # ImportError while the backend does not exist yet
        return f"{type(exc).__name__}: {exc}"
    try:
        charge = Charge("probe|global=*|total", 0.0, 1.0, math.inf)
        outcome = ledger.reserve("probe", [charge], now=time.time(), lease_until=time.time() + 5)
        if outcome.ok:
            ledger.commit("probe", [charge], now=time.time())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            ledger.close()
    return None


@contextlib.contextmanager
def sqlite_file() -> Iterator[str]:
    """A ``sqlite:///`` URI in a temporary folder, removed afterwards."""
    folder = tempfile.mkdtemp(prefix="bw-bench-sqlite-")
    try:
        yield f"sqlite:///{Path(folder) / 'spend.db'}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """Our own redis-server on a free loopback port (no persistence); None if unavailable."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not _wait_for(port):
            yield None
            return
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False

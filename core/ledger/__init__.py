"""Ledgers keep spend for budgets; ``open_ledger(uri)`` picks one by URI."""

from __future__ import annotations

from .base import (
    BucketState,
    Charge,
    Ledger,
    ReserveOutcome,
    Settlement,
    SettlingLedger,
    SyncLedger,
)
from .memory import MemoryLedger

__all__ = [
    "BucketState",
    "Charge",
    "Ledger",
    "MemoryLedger",
    "ReserveOutcome",
    "Settlement",
    "SettlingLedger",
    "SyncLedger",
    "open_ledger",
]


def open_ledger(uri: str | Ledger) -> Ledger:
    """A ledger for ``memory://``, ``sqlite:///path`` or ``redis://host:port/db``."""
    if not isinstance(uri, str):
        return uri
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryLedger(uri)
    if scheme == "sqlite":
        from .sqlite import SQLiteLedger

        ledger: Ledger = SQLiteLedger(uri)
        return ledger
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisLedger

        remote: Ledger = RedisLedger(uri)
        return remote
    raise ValueError(
        f"unknown ledger URI {uri!r}: use memory://, sqlite:///path/to/file.db or "
        "redis://host:port/db"
    )

"""Finishing a run that nobody will finish, from a garbage-collection finalizer.

Adapters finish a run whose framework dropped it unfinished (an exception, an interrupt, a
tripwire) from a ``weakref.finalize`` callback. Python runs such a callback wherever the
collector happens to run: possibly inside budgetwarden's own code, while that thread holds a
lock (the in-process ledger's, a pool's, a run's) that finishing needs again. Locks are not
re-entrant, so finishing there would wait for ever on its own thread. ``finish_abandoned``
finishes at once when the collector ran outside budgetwarden's code, and otherwise on a
short-lived thread of its own, which waits until the interrupted code lets go.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

__all__ = ["finish_abandoned", "join_abandoned"]

#: the folders of budgetwarden's code (the core and its integrations), as frame file prefixes
_OURS: tuple[str, ...] = ()
#: the folder of ``weakref.py``, whose ``finalize.__call__`` runs the callbacks
_WEAKREF = str(Path(sys.modules["weakref"].__file__ or "weakref.py"))


def _our_folders() -> tuple[str, ...]:
    global _OURS
    if not _OURS:
        import budgetwarden

        folders = {str(Path(p)) for p in budgetwarden.__path__}
        integrations = sys.modules.get("budgetwarden.integrations")
        if integrations is not None:
            folders.update(str(Path(p)) for p in integrations.__path__)
        _OURS = tuple(folder.rstrip("/") + "/" for folder in folders)
    return _OURS


def collected_inside_budgetwarden() -> bool:
    """Whether the finalizer running now was called by the collector inside budgetwarden's
    code: a frame of ours below the ``weakref`` frames that run the finalizer. A call made
    directly, not by a finalizer, is not."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename != _WEAKREF:
        frame = frame.f_back  # the finalizer's own frames
    while frame is not None and frame.f_code.co_filename == _WEAKREF:
        frame = frame.f_back  # the weakref machinery that called it
    ours = _our_folders()
    while frame is not None:
        if frame.f_code.co_filename.startswith(ours):
            return True
        frame = frame.f_back
    return False


#: the finishing threads still running (``join_abandoned`` waits for them)
_finishing: set[threading.Thread] = set()


def finish_abandoned(work: Callable[[], None]) -> None:
    """Run ``work`` (finishing an abandoned run) now, or, when the collector ran it inside
    budgetwarden's code, on a thread of its own (see the module docstring)."""
    if not collected_inside_budgetwarden():
        work()
        return
    thread = threading.Thread(
        target=_finish_then_forget, args=(work,), name="budgetwarden-abandoned", daemon=True
    )
    _finishing.add(thread)
    thread.start()


def _finish_then_forget(work: Callable[[], None]) -> None:
    try:
        work()
    finally:
        _finishing.discard(threading.current_thread())


def join_abandoned(timeout: float = 5.0) -> bool:
    """Wait until the abandoned runs being finished on threads of their own are finished
    (their ``RunFinished`` emitted, their holds freed); False if ``timeout`` seconds were
    not enough. For tests, and for code that reads spend right after ``gc.collect()``."""
    deadline = time.monotonic() + timeout
    for thread in list(_finishing):
        thread.join(max(deadline - time.monotonic(), 0.0))
    return not _finishing

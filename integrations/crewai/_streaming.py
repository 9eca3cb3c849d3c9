"""Streamed kickoffs of a guarded crew: CrewAI's chunks, a governed run, a stop on close.

CrewAI streams a ``stream=True`` crew by running a plain kickoff in a worker thread (a task,
for the async form) once the caller starts iterating, and by passing on the LLM's stream
chunks as they come. A guarded stream does the same with a guarded kickoff, so the run's
hooks, caps and partial output are those of ``GuardedCrew.kickoff``. A stream the caller
closes or drops before its end cancels its run: the crew stops at its next model or tool
call instead of running on, unread and still spending.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from crewai import Crew
from crewai.crews.utils import StreamingContext, enable_agent_streaming
from crewai.types.streaming import CrewStreamingOutput, StreamChunk, StreamingOutputBase
from crewai.utilities.streaming import (
    create_async_chunk_generator,
    create_chunk_generator,
    register_cleanup,
    signal_end,
    signal_error,
)

from budgetwarden import Warden

from ._output import GuardedCrewOutput

#: Why a stream's run was cancelled (the reason of its cancel, and of the notice it emits).
CLOSED_REASON = "the stream was closed before its end"


class GuardedCrewStreamingOutput(CrewStreamingOutput):
    """The chunks of a guarded kickoff as they stream, then its ``GuardedCrewOutput``.

    Iterate it (``for chunk in streaming`` or ``async for``) to run the crew; ``result`` is
    then what ``GuardedCrew.kickoff`` would have returned: the crew's output with its
    ``report``, or the partial output of a stopped run. Under
    ``Policy(on_exceeded="raise")`` a stop raises ``BudgetExceeded`` from the iteration, as
    it would from ``kickoff``. Closing it (``close()``, ``aclose()``, leaving an ``async with``
    block, or dropping the iterator) before the end cancels the run (``cap="cancelled"``).
    """

    run_id: str
    """The id of the stream's run (known before it starts, e.g. for ``warden.cancel``)."""

    @property
    def result(self) -> GuardedCrewOutput:
        """The guarded kickoff's output, once every chunk was read."""
        output = super().result
        if not isinstance(output, GuardedCrewOutput):  # pragma: no cover - set only below
            raise TypeError(f"a guarded stream ended with {output!r}")
        return output

    def __iter__(self) -> Iterator[StreamChunk]:
        """The chunks; a loop left early (``break``) closes the stream, as ``close()``."""
        try:
            yield from super().__iter__()
        finally:
            self.close()  # nothing once the stream ended or failed

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        """The chunks (``async for``); a loop left early closes the stream."""
        return self._closing_aiter()

    async def _closing_aiter(self) -> AsyncIterator[StreamChunk]:
        try:
            async for chunk in self._async_iterate():
                yield chunk
        finally:
            await self.aclose()


def stream(
    crew: Crew, warden: Warden, run_id: str, kickoff: Callable[[], GuardedCrewOutput]
) -> GuardedCrewStreamingOutput:
    """Stream ``kickoff`` (a guarded kickoff of ``crew`` as run ``run_id``) in a thread."""
    enable_agent_streaming(crew.agents)
    context = StreamingContext()
    closer = _Closer(warden, run_id)

    def run_crew() -> None:
        closer.started()
        try:
            with not_streaming(crew):
                context.result_holder.append(kickoff())
        except Exception as error:
            signal_error(context.state, error)
        finally:
            try:
                closer.ended()
            finally:
                signal_end(context.state)

    chunks = create_chunk_generator(context.state, run_crew, context.output_holder)
    output = GuardedCrewStreamingOutput()
    output._sync_iterator = _stopping_when_closed(chunks, closer, output)
    return _registered(output, context, run_id)


def astream(
    crew: Crew, warden: Warden, run_id: str, kickoff: Callable[[], Awaitable[GuardedCrewOutput]]
) -> GuardedCrewStreamingOutput:
    """Stream ``kickoff`` (a native async guarded kickoff) as a task of the caller's loop."""
    enable_agent_streaming(crew.agents)
    context = StreamingContext(use_async=True)
    closer = _Closer(warden, run_id)

    async def run_crew() -> None:
        try:
            with not_streaming(crew):
                context.result_holder.append(await kickoff())
        except Exception as error:
            signal_error(context.state, error, is_async=True)
        finally:
            try:
                closer.ended()
            finally:
                signal_end(context.state, is_async=True)

    chunks = create_async_chunk_generator(context.state, run_crew, context.output_holder)
    output = GuardedCrewStreamingOutput()
    output._async_iterator = _astopping_when_closed(chunks, closer, output)
    return _registered(output, context, run_id)


def _registered(
    output: GuardedCrewStreamingOutput, context: StreamingContext, run_id: str
) -> GuardedCrewStreamingOutput:
    output.run_id = run_id
    register_cleanup(output, context.state)
    context.output_holder.append(output)
    return output


@contextlib.contextmanager
def not_streaming(crew: Crew) -> Iterator[None]:
    """A kickoff of ``crew`` that does not stream (inside a guarded stream, the crew's own
    kickoff must not stream again: CrewAI does the same). Streams of one crew side by side
    share the change; the last to end puts ``crew.stream`` back as it was."""
    key = id(crew)
    with _UNSTREAMED_LOCK:
        count, stream_was = _UNSTREAMED.get(key, (0, crew.stream))
        _UNSTREAMED[key] = (count + 1, stream_was)
        crew.stream = False
    try:
        yield
    finally:
        with _UNSTREAMED_LOCK:
            count, stream_was = _UNSTREAMED.pop(key)
            if count > 1:
                _UNSTREAMED[key] = (count - 1, stream_was)
            else:
                crew.stream = stream_was


#: Crews some kickoff runs unstreamed now, by ``id``: how many, and their own ``stream``.
_UNSTREAMED: dict[int, tuple[int, bool]] = {}
_UNSTREAMED_LOCK = threading.Lock()


def _stopping_when_closed(
    chunks: Iterator[StreamChunk], closer: _Closer, output: StreamingOutputBase[Any]
) -> Iterator[StreamChunk]:
    """``chunks``; closed before its end, it cancels the run and waits for the crew to stop
    (at its next call), so that ``output.result`` still holds the partial output (or, under
    ``on_exceeded="raise"``, raises the refusal)."""
    try:
        # not ``yield from``: it would close ``chunks`` first, and CrewAI's close waits
        # for the crew to finish, uncancelled
        for chunk in chunks:  # noqa: UP028
            yield chunk
    except GeneratorExit:
        closer.cancel()
        if not closer.on_crew_thread():  # a dropped stream collected there cannot wait
            _keep_error(output, _drain(chunks))
        raise


async def _astopping_when_closed(
    chunks: AsyncIterator[StreamChunk], closer: _Closer, output: StreamingOutputBase[Any]
) -> AsyncIterator[StreamChunk]:
    """The async form of ``_stopping_when_closed``."""
    try:
        async for chunk in chunks:
            yield chunk
    except GeneratorExit:
        closer.cancel()
        _keep_error(output, await _adrain(chunks))
        raise


class _Closer:
    """Cancels a stream's run when its reader leaves before the end; the crew's side lifts
    the cancel once the run has ended (never before it is set: no cancel is left behind)."""

    def __init__(self, warden: Warden, run_id: str) -> None:
        self._warden = warden
        self._run_id = run_id
        self._lock = threading.Lock()
        self._ended = False
        self._cancelled = False
        self._thread: int | None = None

    def started(self) -> None:
        """Called by the crew's side as the kickoff starts (in its worker thread)."""
        self._thread = threading.get_ident()

    def on_crew_thread(self) -> bool:
        return self._thread == threading.get_ident()

    def cancel(self) -> None:
        with self._lock:
            if not (self._ended or self._cancelled):
                self._warden.cancel(self._run_id, reason=CLOSED_REASON)
                self._cancelled = True

    def ended(self) -> None:
        """Called by the crew's side once the kickoff has returned or raised."""
        with self._lock:
            self._ended = True
            if self._cancelled:
                self._warden.uncancel(self._run_id)


def _keep_error(output: StreamingOutputBase[Any], error: Exception | None) -> None:
    """What the cancelled run raised, for ``result`` to raise."""
    if error is not None:
        output._error = error


def _drain(chunks: Iterator[Any]) -> Exception | None:
    """Read a cancelled stream to its end. What it raises there is the run's, not the
    closer's: returned, for ``result`` to raise."""
    try:
        for _ in chunks:
            pass
    except Exception as error:
        return error
    return None


async def _adrain(chunks: AsyncIterator[Any]) -> Exception | None:
    try:
        async for _ in chunks:
            pass
    except Exception as error:
        return error
    return None

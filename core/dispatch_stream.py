"""``complete(..., stream=True)``: LiteLLM's stream of a guarded call, recorded at its end.

A streamed call's usage comes in its last chunk (``stream_options={"include_usage":
True}``, asked for unless the caller set ``stream_options``), after every word: the call is
recorded once, when its stream ends, fails or is closed, from LiteLLM's rebuilt response
(``litellm.stream_chunk_builder``). Without a usage chunk, or cut short by its reader, the
figures are LiteLLM's count of what came, marked ``estimated``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .run import Run, Step
from .usage import Usage

Traceback = TracebackType | None

__all__ = ["Recorders", "RecordedStream", "check_streamable", "with_usage_chunk"]


@dataclass(frozen=True)
class Recorders:
    """How a stream's call is recorded from its rebuilt response (``record(run, step,
    response, latency_s, outcome, estimated)``, and its async twin), and the outcome of an
    error that ended it."""

    record: Callable[[Run, Step, Any, float, str, bool], None]
    arecord: Callable[[Run, Step, Any, float, str, bool], Awaitable[None]]
    outcome_of: Callable[[BaseException], str]


def check_streamable(expect_json: bool, validate: object) -> None:
    """A stream's answer is read by its caller as it comes: it cannot be checked first."""
    if expect_json or validate is not None:
        raise ValueError(
            "complete(stream=True) cannot check an answer before returning it: drop "
            "expect_json= / validate= and check the text once the stream has ended"
        )


def with_usage_chunk(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Ask for the usage chunk (as CrewAI's LiteLLM calls do), unless the caller chose."""
    if "stream_options" in kwargs:
        return kwargs
    return {**kwargs, "stream_options": {"include_usage": True}}


class RecordedStream:
    """LiteLLM's stream of one guarded call, chunk by chunk (``for`` or ``async for``); the
    call is recorded when the stream ends, raises, or is closed (``close()``, ``aclose()``,
    ``with``). Every other attribute is the LiteLLM stream's own."""

    def __init__(
        self,
        stream: Any,
        run: Run,
        step: Step,
        messages: Sequence[Any],
        recorders: Recorders,
    ) -> None:
        self._stream = stream
        self._run = run
        self._step = step
        self._messages = list(messages)
        self._recorders = recorders
        self._chunks: list[Any] = []
        self._started = time.perf_counter()
        self._recorded = False

    def __getattr__(self, name: str) -> Any:
        if name == "_stream":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self._stream, name)

    # ------------------------------------------------------------------ sync
    def __iter__(self) -> RecordedStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._stream)
        except StopIteration:
            self._end(None)
            raise
        except Exception as error:
            self._end(error)
            raise
        self._chunks.append(chunk)
        return chunk

    def close(self) -> None:
        """Stop reading: the call is recorded with what came."""
        self._end(None)
        close = getattr(self._stream, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> RecordedStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ async
    def __aiter__(self) -> RecordedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            await self._aend(None)
            raise
        except Exception as error:
            await self._aend(error)
            raise
        self._chunks.append(chunk)
        return chunk

    async def aclose(self) -> None:
        """Async twin of ``close``."""
        await self._aend(None)
        close = getattr(self._stream, "aclose", None)
        if callable(close):
            result = close()
            if isinstance(result, Awaitable):
                await result

    async def __aenter__(self) -> RecordedStream:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ recording
    def _end(self, error: BaseException | None) -> None:
        if self._recorded:
            return
        self._recorded = True
        latency, outcome, response = self._ending(error)
        if response is None:  # failed before its first chunk: nothing was billed
            self._run.after_llm_call(self._step, Usage(), latency_s=latency, outcome=outcome)
        else:
            self._recorders.record(
                self._run, self._step, response, latency, outcome, not self._billed()
            )

    async def _aend(self, error: BaseException | None) -> None:
        if self._recorded:
            return
        self._recorded = True
        latency, outcome, response = self._ending(error)
        if response is None:
            await self._run.aafter_llm_call(self._step, Usage(), latency_s=latency, outcome=outcome)
        else:
            await self._recorders.arecord(
                self._run, self._step, response, latency, outcome, not self._billed()
            )

    def _ending(self, error: BaseException | None) -> tuple[float, str, Any]:
        latency = time.perf_counter() - self._started
        outcome = "ok" if error is None else self._recorders.outcome_of(error)
        return latency, outcome, self._rebuilt() if self._chunks else None

    def _billed(self) -> bool:
        """Whether a chunk carried the provider's own usage (its last, when asked for)."""
        return any(getattr(chunk, "usage", None) for chunk in self._chunks)

    def _rebuilt(self) -> Any:
        """The whole response from the chunks (LiteLLM counts its usage when no chunk
        carried the provider's)."""
        import litellm

        return litellm.stream_chunk_builder(self._chunks, messages=self._messages)

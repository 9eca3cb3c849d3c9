"""``complete(..., stream=True)``: LiteLLM's stream of a guarded call, recorded at its end.

A streamed call's usage comes in its last chunk (``stream_options={"include_usage":
True}``, asked for unless the caller set ``stream_options``), after every word: the call is
recorded once, when its stream ends, fails or is closed. The stream keeps only what that
needs (the usage chunk, the model, the answer's text and tool calls), not its chunks.
Without a usage chunk, or cut short by its reader, the call is estimated (its prompt as
reserved, its output from what came) and marked ``estimated``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple

from .run import Run, Step
from .usage import Usage, answer_text

Traceback = TracebackType | None

__all__ = ["Answer", "Recorders", "RecordedStream", "check_streamable", "with_usage_chunk"]


class Answer(NamedTuple):
    """What a call's response says of it: its usage (None: to be estimated from ``text``),
    the model to price it as, and the answer's text with its tool calls."""

    usage: Usage | None
    model: str | None
    text: str | None


@dataclass(frozen=True)
class Recorders:
    """How a stream's call is recorded (``record(run, step, answer, latency_s, outcome)``
    and its async twin), the outcome of an error that ended it, the model a chunk's model
    name is priced as, and the usage of a usage chunk (``usage_of(usage, service_tier)``)."""

    record: Callable[[Run, Step, Answer, float, str], None]
    arecord: Callable[[Run, Step, Answer, float, str], Awaitable[None]]
    outcome_of: Callable[[BaseException], str]
    priced_model: Callable[[Step, str | None], str | None]
    usage_of: Callable[[Any, Any], Usage | None]


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

    def __init__(self, stream: Any, run: Run, step: Step, recorders: Recorders) -> None:
        self._stream = stream
        self._run = run
        self._step = step
        self._recorders = recorders
        self._started = time.perf_counter()
        self._recorded = False
        self._seen = _Seen()

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
        self._seen.add(chunk)
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
        self, kind: type[BaseException] | None, error: BaseException | None, tb: Traceback
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
        self._seen.add(chunk)
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
        self, kind: type[BaseException] | None, error: BaseException | None, tb: Traceback
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ recording
    def _end(self, error: BaseException | None) -> None:
        if not self._recorded:
            self._recorded = True
            self._recorders.record(self._run, self._step, *self._ending(error))

    async def _aend(self, error: BaseException | None) -> None:
        if not self._recorded:
            self._recorded = True
            await self._recorders.arecord(self._run, self._step, *self._ending(error))

    def _ending(self, error: BaseException | None) -> tuple[Answer, float, str]:
        latency = time.perf_counter() - self._started
        outcome = "ok" if error is None else self._recorders.outcome_of(error)
        seen = self._seen
        if not seen.chunks:  # it failed before its first chunk: nothing was billed
            return Answer(Usage(), self._step.model, None), latency, outcome
        usage = self._recorders.usage_of(seen.usage, seen.service_tier)
        model = self._recorders.priced_model(self._step, seen.model)
        return Answer(usage, model, seen.text()), latency, outcome


class _Seen:
    """What the chunks so far say of the call: the usage chunk, the model and tier, and
    the answer's text and tool calls (``name(arguments)``, billed as output)."""

    def __init__(self) -> None:
        self.chunks = 0
        self.usage: Any = None
        self.model: str | None = None
        self.service_tier: Any = None
        self._parts: list[str] = []
        self._calls: dict[int, tuple[list[str], list[str]]] = {}  # by index: name, arguments

    def add(self, chunk: Any) -> None:
        self.chunks += 1
        usage = getattr(chunk, "usage", None)
        if usage:
            self.usage = usage
        if self.model is None:
            self.model = getattr(chunk, "model", None)
        tier = getattr(chunk, "service_tier", None)
        if tier:
            self.service_tier = tier
        for choice in getattr(chunk, "choices", None) or ():
            self._add_delta(getattr(choice, "delta", None))

    def _add_delta(self, delta: Any) -> None:
        content = getattr(delta, "content", None)
        if isinstance(content, str):
            self._parts.append(content)
        for call in getattr(delta, "tool_calls", None) or ():
            name, arguments = self._calls.setdefault(getattr(call, "index", 0) or 0, ([], []))
            function = getattr(call, "function", None)
            if isinstance(piece := getattr(function, "name", None), str):
                name.append(piece)
            if isinstance(piece := getattr(function, "arguments", None), str):
                arguments.append(piece)

    def text(self) -> str:
        calls = [("".join(n), "".join(a)) for _, (n, a) in sorted(self._calls.items())]
        return answer_text("".join(self._parts), calls)

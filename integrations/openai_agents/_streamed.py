"""run_guarded_streamed: a streamed run under the warden, ending with a ``GuardedResult``.

``Runner.run_streamed`` with the guard of ``run_guarded``: its events as the SDK streams them,
then the final or partial result instead of an exception. A reader that leaves the stream
before its end cancels the run, which the SDK would otherwise go on with, unread and still
spending, until its last turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

from agents.agent import Agent
from agents.result import RunResultStreaming
from agents.run import Runner
from agents.stream_events import StreamEvent

from budgetwarden import BudgetError, Warden

from ._guarded import (
    GuardedResult,
    RunInput,
    _completed,
    _context_of,
    _last_message_text,
    _max_turns,
    _Options,
    _prepare,
    _stopped,
)
from ._hooks import BudgetRunHooks
from ._routing import ModelFactory

__all__ = ["GuardedStream", "run_guarded_streamed"]


class GuardedStream:
    """A streamed guarded run: read ``stream_events()``, then ``result`` is its outcome.

    ``result`` is the ``GuardedResult`` ``run_guarded`` would have returned: the final
    output, or the partial one with the cap that stopped the run (under
    ``on_exceeded="raise"`` the refusal is raised from ``stream_events()`` instead).
    ``cancel()`` stops the run as the SDK's ``cancel`` does; so does leaving the stream
    early (``break``, or closing it), and the result then says ``cancelled``. ``streaming``
    is the SDK's own ``RunResultStreaming``.
    """

    def __init__(
        self,
        streaming: RunResultStreaming,
        hooks: BudgetRunHooks,
        usage: object,
        agent: Agent[Any],
        max_turns: int | None,
    ) -> None:
        self.streaming = streaming
        self.hooks = hooks
        self._usage = usage
        self._agent = agent
        self._max_turns = max_turns
        self._result: GuardedResult | None = None

    @property
    def result(self) -> GuardedResult:
        """The run's outcome, once ``stream_events()`` has ended."""
        if self._result is None:
            raise RuntimeError("the run has not ended: read stream_events() to its end first")
        return self._result

    @property
    def is_complete(self) -> bool:
        """True once the run has ended (completed, stopped or cancelled)."""
        return self._result is not None

    def cancel(self, mode: Literal["immediate", "after_turn"] = "immediate") -> None:
        """Stop the run (``"after_turn"``: once the current turn is done), as the SDK's
        ``RunResultStreaming.cancel``; keep reading ``stream_events()`` to its end. A run
        that still ends with its final output (``"after_turn"``) is not marked cancelled."""
        self.streaming.cancel(mode)

    async def stream_events(self) -> AsyncIterator[StreamEvent]:
        """The SDK's stream events; the run is finished, and ``result`` set, at their end."""
        error: BaseException | None = None
        refused = False
        events = self.streaming.stream_events()
        try:
            async for event in events:
                yield event
        except BudgetError as exc:
            refused = True
            self._result = self._stopped(exc)
            return
        except GeneratorExit:
            self.cancel()  # the reader left: stop the SDK's run too
            close = getattr(events, "aclose", None)  # an async generator, typed as an iterator
            if close is not None:
                await close()
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            await self._close(error, refused)
        if self._result is None:
            self._result = _completed(self.streaming, self.hooks.governed(self._usage))

    async def _close(self, error: BaseException | None, refused: bool) -> None:
        """Finish the run. One still open after its stream ended without an error or a
        refusal was cancelled (the SDK calls no hook then): finished as such, once the SDK's
        run loop has stopped, with its call in flight recorded as unanswered."""
        cancelled = error is None and not refused and self._still_open()
        if cancelled:
            task = self.streaming.run_loop_task
            if task is not None and not task.done():
                await asyncio.wait([task])
            error = asyncio.CancelledError("the streamed run was cancelled")
        await self.hooks.aclose(error, usage=self._usage)
        if cancelled:
            self._result = self._cancelled_result()

    def _still_open(self) -> bool:
        governed = self.hooks.governed(self._usage)
        return governed is not None and governed.run.finished_at is None and not governed.answered

    def _stopped(self, exc: BudgetError) -> GuardedResult:
        governed = self.hooks.governed(self._usage)
        return _stopped(exc, self.hooks, governed, self._agent, self._max_turns)

    def _cancelled_result(self) -> GuardedResult:
        governed = self.hooks.governed(self._usage)
        items = list(self.streaming.new_items)
        return GuardedResult(
            output=_last_message_text(items),
            report=governed.run.report if governed is not None else None,
            result=self.streaming,
            new_items=items,
            cancelled=True,
        )


def run_guarded_streamed(
    starting_agent: Agent[Any],
    input: RunInput,
    warden: Warden,
    *,
    agent: str | None = None,
    user: str | None = None,
    workspace: str | None = None,
    workflow: str | None = None,
    task_class: str | None = None,
    key: str | None = None,
    thread: str | None = None,
    feature: str | None = None,
    route: bool = False,
    model_factory: ModelFactory | None = None,
    hooks: Any = None,
    **runner_kwargs: Any,
) -> GuardedStream:
    """``Runner.run_streamed`` under the warden, with ``run_guarded``'s keywords: read
    ``stream_events()``, then ``result`` is the final or partial ``GuardedResult``.

    Leaving the stream before its end cancels the run (the SDK's own streamed run goes on
    in the background until its last turn otherwise)."""
    attribution = {
        "agent": agent, "user": user, "workspace": workspace, "workflow": workflow,
        "task_class": task_class, "key": key, "thread": thread, "feature": feature,
    }  # fmt: skip
    options = _Options(attribution, route, model_factory, hooks, runner_kwargs)
    budget_hooks, kwargs = _prepare(warden, input, options)
    usage = _context_of(input, kwargs).usage
    budget_hooks.finish_on_close(usage)
    streaming = Runner.run_streamed(starting_agent, input, hooks=budget_hooks, **kwargs)
    return GuardedStream(streaming, budget_hooks, usage, starting_agent, _max_turns(input, kwargs))

"""The steps a run hands to adapters: a model call or a tool call that may happen now."""

from __future__ import annotations

from dataclasses import dataclass

from .buckets import BucketRef
from .ledger.base import Charge
from .routing import RouteChoice

__all__ = ["FINAL_ANSWER_INSTRUCTION", "Plan", "Step", "ToolStep"]

#: The one-line instruction for the last model call a cap allows (``Limits.final_answer``).
FINAL_ANSWER_INSTRUCTION = (
    "Budget limit reached: this is your last model call. Do not call any tool; answer now "
    "with your best final answer from what you already know, and say what is unfinished."
)


@dataclass(slots=True)
class Step:
    """A model call that may happen now: which model, how much was reserved, what to do.

    ``model`` is the model to call (routing may have changed it); ``compress`` asks for a
    shorter context; ``final`` marks the last call a cap allows (make it without tools and
    with ``FINAL_ANSWER_INSTRUCTION``; ``final_cap`` names the cap); ``hint`` is a note to
    add to the model's input when the policy enables budget hints. ``done``: its hold is
    settled (recorded, released, or freed by the run's end); ``recorded``: its outcome was
    recorded (``after_llm_call`` / ``record_llm_call``, once per step). ``input_tokens`` is
    the reserved prompt, ``tool_tokens`` of it the tool definitions (see
    ``compress_target``) and ``prompt_gap`` the tokens added for what the run's last
    estimate missed of its billed prompt (``None``: the caller's count, nothing added).
    """

    id: str
    model: str | None
    requested_model: str | None
    tier: int | None
    route_reason: str
    compress: bool
    max_tokens: int
    input_tokens: int
    reserved_usd: float
    started_at: float
    retry: bool = False
    final: bool = False
    final_cap: str | None = None
    hint: str | None = None
    buckets: tuple[BucketRef, ...] = ()
    done: bool = False
    recorded: bool = False
    tool_tokens: int = 0
    prompt_gap: int | None = None

    def compress_target(self, ratio: float) -> int:
        """The tokens the messages of a compressed call may keep: ``ratio`` of the prompt's
        messages (tool definitions cannot be compressed, and the prompt gap is none of the
        messages, so neither is counted)."""
        messages = self.input_tokens - self.tool_tokens - (self.prompt_gap or 0)
        return max(int(messages * ratio), 1)


@dataclass(slots=True)
class ToolStep:
    """A tool call that may happen now.

    ``signature`` is the call's canonical text (tool and arguments) when a
    ``max_repeated_tool_calls`` cap watches for repeats, else the tool's name. ``retry``:
    the framework runs a failed call of the same id again (no repeat of the model's).
    ``done`` and ``recorded`` as on ``Step``.
    """

    id: str
    name: str
    call_id: str | None
    signature: str
    price_usd: float
    started_at: float
    buckets: tuple[BucketRef, ...] = ()
    done: bool = False
    recorded: bool = False
    retry: bool = False


@dataclass(slots=True)
class Plan:
    """One way to make the next model call: a route, its worst case and its charges."""

    id: str
    choice: RouteChoice
    worst_cost: float
    refs: tuple[BucketRef, ...]
    retry: bool
    charges: list[Charge]

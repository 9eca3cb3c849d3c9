"""What the hooks keep per governed run and per model call in flight."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from agents.agent import Agent
from agents.items import ModelResponse

from budgetwarden import BudgetError, Run, Step, ToolStep

from ._translate import InputTokens, ParsedArguments

__all__ = ["GovernedRun", "LlmCall", "scope_key"]


def scope_key(context: Any) -> int:
    """Which ``Runner.run`` a hook context belongs to.

    Every context of one run (its wrapper, its agent-hook and tool contexts) shares the
    wrapper's approval table; an agent used as a tool runs with a fresh wrapper (a new table)
    that still shares its caller's ``usage``. So the table tells runs apart, the usage tells
    which runs are nested in one another.
    """
    shared = getattr(context, "_approvals", None)  # scope_anchor, inline: one call per hook
    return id(shared) if shared is not None else id(context.usage)


def scope_anchor(context: Any) -> object:
    """The object whose id is ``scope_key(context)``."""
    shared = getattr(context, "_approvals", None)
    return shared if shared is not None else context.usage


@dataclass(eq=False)
class GovernedRun:
    """One ``Runner.run`` (with its handoffs) under the warden: a budgetwarden ``Run``."""

    run: Run
    scope: int
    usage_key: int
    parent: GovernedRun | None = None
    agent_name: str | None = None
    llm_calls: dict[int, LlmCall] = field(default_factory=dict)  # by id(run context)
    tool_steps: dict[str, tuple[ToolStep, float]] = field(default_factory=dict)  # by call id
    tool_results: dict[str, str] = field(default_factory=dict)  # by call id, this turn's
    parsed_arguments: ParsedArguments = field(default_factory=dict)  # this turn's tool calls
    input_tokens: InputTokens = field(default_factory=InputTokens)
    last_text: str | None = None
    last_response: ModelResponse | None = None
    last_agent: Agent[Any] | None = None
    final_output: Any = None
    #: the last agent produced ``final_output`` (the run may wait for its output guardrails)
    answered: bool = False
    finished: bool = False
    #: whether the run's policy routes (read once: a pydantic read per call is dear)
    routed: bool = False
    #: the object whose id is ``scope`` (kept with a refused run, so the id is not reused)
    anchor: object = None
    #: the refusal that ended the run (its other tool calls of the turn get it too)
    refusal: BudgetError | None = None

    @property
    def root(self) -> GovernedRun:
        """The outermost run this one is nested in (itself when it is not nested)."""
        node = self
        while node.parent is not None:
            node = node.parent
        return node


@dataclass(eq=False, slots=True)
class LlmCall:
    """One model call in flight: its reservation, and what the routed model dispatched."""

    state: GovernedRun
    step: Step
    input_items: Any  # the very object the SDK passes on to Model.get_response
    system_prompt: str | None
    agent: Agent[Any]
    model: str | None  # the agent's model name, as model_name() reads it
    tool_names: list[str]  # the agent's tools and handoffs, as agent_tool_names() reads them
    started: float = field(default_factory=time.monotonic)
    dispatched_model: str | None = None
    settled: bool = False
    failed_models: set[str] = field(default_factory=set)

    @property
    def final(self) -> bool:
        """True for the last call a cap allows: made without tools, asking for an answer."""
        return bool(self.step.final)

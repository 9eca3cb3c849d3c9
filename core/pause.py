"""Pause and resume: a run stopped by a window can go on where it stopped, later."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .report import RunReport

__all__ = ["PauseHandle"]


class PauseHandle(BaseModel):
    """What a paused run needs to resume: who it was, what stopped it, until when, and the
    framework's own state (a LangGraph thread id, an Agents SDK ``RunState`` as JSON...).

    Kept in the ledger by ``warden.save_handle`` so it survives a process restart.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=lambda: f"pause-{uuid.uuid4().hex[:12]}")
    run_id: str
    framework: str = Field(description="langgraph, openai_agents, crewai or core.")
    cap: str
    resets_at: float | None = None
    #: What the refused call needed of the budget (its worst case, in the budget's unit):
    #: the run is ready to resume when the budget has that much room, not merely some.
    needed: float = 0.0
    created_at: float
    attribution: dict[str, str | None] = Field(default_factory=dict)
    report: RunReport
    state: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        """The handle as JSON (what the ledger stores)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> PauseHandle:
        """A handle from ``to_json`` output."""
        return cls.model_validate_json(text)

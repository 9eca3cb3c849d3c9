"""RunReport: what one run did, spent, and why it stopped."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RunReport"]


class RunReport(BaseModel):
    """A snapshot of one run: its counters, its spend, and why it stopped (if it did)."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    parent_run_id: str | None = None
    agent: str | None = None
    iterations: int = 0
    tool_calls: int = 0
    tool_calls_by_name: dict[str, int] = Field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    overshoot_usd: float = 0.0
    retries: int = 0
    errors: int = 0
    wall_seconds: float = 0.0
    models: list[str] = Field(default_factory=list)
    stop_reason: str | None = Field(
        default=None, description="The cap that stopped the run, 'completed', or 'error'."
    )
    partial: bool = Field(
        default=False, description="True when a cap ended the run before its end."
    )
    success: bool | None = None
    children: list[RunReport] = Field(default_factory=list)

    def summary(self) -> str:
        """One line for people: calls, tokens, cost and why it stopped."""
        stop = f", stopped by {self.stop_reason}" if self.partial else ""
        return (
            f"{self.iterations} model calls, {self.tool_calls} tool calls, "
            f"{self.input_tokens} input + {self.output_tokens} output tokens, "
            f"${self.cost_usd:.4f} in {self.wall_seconds:.1f}s{stop}"
        )

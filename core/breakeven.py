"""Self-hosting against an API: what each costs a month, and where they break even.

For a daily token volume ``V`` (input and output together, ``input_share`` of it input):

- **API**: ``V * 30 * (input_share * input price + (1 - input_share) * output price)``, with
  the model's base per-token prices from ``PriceBook`` (or prices you give).
- **Self-hosted**: GPUs are paid for every hour of a 30-day month. One GPU serves
  ``tokens_per_second * utilisation * 86,400`` tokens a day (``utilisation``: the share of
  paid hours that produce tokens; ``tokens_per_second``: sustained throughput on your mix of
  input and output). ``gpus = ceil(V / that)`` (at least 1) and the month costs
  ``gpus * gpu_usd_per_hour * 720 + ops_usd_per_month``.
- **Break-even**: the daily volume above which self-hosting is always cheaper. Self-hosting
  is a staircase (one more GPU per step of capacity) and the API a line, so the line can
  cross a step and fall below the next one; the break-even is where it stays above. There
  is none when one GPU's full daily capacity costs less through the API than that GPU costs
  to rent.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from .estimate import DAYS_PER_MONTH

__all__ = ["Breakeven", "SelfHosted", "breakeven"]

HOURS_PER_MONTH = 24 * DAYS_PER_MONTH


class SelfHosted(BaseModel):
    """A self-hosted deployment: GPU price, throughput, utilisation and fixed ops cost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu_usd_per_hour: float = Field(
        gt=0, allow_inf_nan=False, description="Price of one GPU per hour."
    )
    tokens_per_second: float = Field(
        gt=0, allow_inf_nan=False, description="Sustained tokens/s of one GPU."
    )
    utilisation: float = Field(default=0.5, gt=0, le=1, description="Share of paid hours serving.")
    ops_usd_per_month: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="People, monitoring, storage."
    )

    @property
    def tokens_per_gpu_day(self) -> float:
        """Tokens one GPU serves in a day at this utilisation."""
        return self.tokens_per_second * self.utilisation * 86_400

    def gpus_for(self, tokens_per_day: float) -> int:
        """GPUs needed to serve a daily volume (at least one)."""
        return max(1, math.ceil(tokens_per_day / self.tokens_per_gpu_day))

    def monthly_usd(self, tokens_per_day: float) -> float:
        """What a month of serving this daily volume costs."""
        gpus = self.gpus_for(tokens_per_day)
        return gpus * self.gpu_usd_per_hour * HOURS_PER_MONTH + self.ops_usd_per_month


class Breakeven(BaseModel):
    """Monthly cost through the API and self-hosted, and the break-even daily volume."""

    model_config = ConfigDict(frozen=True)

    model: str
    tokens_per_day: float
    api_usd_per_token: float
    api_monthly_usd: float
    gpus: int
    self_hosted_monthly_usd: float
    cheaper: str
    breakeven_tokens_per_day: float | None
    breakeven_gpus: int | None


def _crossing(hosting: SelfHosted, api_per_token: float) -> tuple[float, int] | None:
    """The daily volume above which self-hosting is always cheaper, and its GPUs.

    With ``g`` GPUs (volumes up to ``g`` GPUs' capacity) the API costs at least self-hosting
    from ``(g * per_gpu + ops) / (30 * price)`` on; each added GPU lifts the staircase again,
    so a crossing inside a step can be followed by a stretch where the API is cheaper. From
    the step whose whole range is cheaper self-hosted, every later step is too: the answer is
    that step's start, or the crossing inside the step before it when that one reaches it.
    """
    per_gpu = hosting.gpu_usd_per_hour * HOURS_PER_MONTH
    capacity = hosting.tokens_per_gpu_day
    per_gpu_capacity = api_per_token * capacity * DAYS_PER_MONTH  # one GPU's volume via the API
    if api_per_token <= 0 or per_gpu_capacity <= per_gpu:
        return None
    margin = per_gpu_capacity - per_gpu
    ops = hosting.ops_usd_per_month
    # step g is cheaper self-hosted over its whole range once g * per_gpu + ops <= the API
    # price of (g - 1) GPUs' capacity, that is from g >= (per_gpu_capacity + ops) / margin
    whole = max(1, math.ceil((per_gpu_capacity + ops) / margin - 1e-12))
    before = whole - 1
    if before >= 1:
        volume = (before * per_gpu + ops) / (DAYS_PER_MONTH * api_per_token)
        if volume <= before * capacity:  # crosses inside the step before, and stays below
            return volume, before
    return max((whole - 1) * capacity, 0.0), whole


def _check_amount(name: str, value: float, what: str) -> None:
    """Refuse a negative, infinite or NaN amount: it would give a negative or endless cost."""
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be {what} >= 0 (got {value})")


def breakeven(
    model: str,
    tokens_per_day: float,
    hosting: SelfHosted,
    *,
    input_usd_per_token: float,
    output_usd_per_token: float,
    input_share: float = 0.75,
) -> Breakeven:
    """Compare a month of ``tokens_per_day`` through ``model``'s API with self-hosting it."""
    if not 0 <= input_share <= 1:
        raise ValueError(f"input_share must be in [0, 1] (got {input_share})")
    _check_amount("tokens_per_day", tokens_per_day, "a number of tokens")
    _check_amount("input_usd_per_token", input_usd_per_token, "a price")
    _check_amount("output_usd_per_token", output_usd_per_token, "a price")
    per_token = input_share * input_usd_per_token + (1 - input_share) * output_usd_per_token
    api = tokens_per_day * DAYS_PER_MONTH * per_token
    own = hosting.monthly_usd(tokens_per_day)
    crossing = _crossing(hosting, per_token)
    return Breakeven(
        model=model,
        tokens_per_day=tokens_per_day,
        api_usd_per_token=per_token,
        api_monthly_usd=api,
        gpus=hosting.gpus_for(tokens_per_day),
        self_hosted_monthly_usd=own,
        cheaper="api" if api <= own else "self-hosted",
        breakeven_tokens_per_day=crossing[0] if crossing else None,
        breakeven_gpus=crossing[1] if crossing else None,
    )

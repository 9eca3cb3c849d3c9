"""The policy: caps on one run, budgets over time, thresholds, routing and tool rules.

Every part is a frozen pydantic model with ``extra="forbid"``: a policy is validated once,
at the edge, and an invalid value is rejected with an error that names the field and what is
allowed. ``Policy.from_file`` reads YAML, TOML or JSON; ``BUDGETWARDEN_*`` environment
variables override file values (``BUDGETWARDEN_LIMITS__MAX_COST_USD=2``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema

from .alerts import AlertRules
from .policy_sources import (
    ENV_PREFIX,
    PolicyError,
    apply_env_overrides,
    name_the_source,
    read_file,
)
from .pricing import ModelPrice
from .strict import Strict as _Frozen
from .windows import window_seconds

__all__ = [
    "OUTCOMES",
    "SCOPES",
    "Budget",
    "Limits",
    "Metric",
    "Policy",
    "PolicyError",
    "Routing",
    "Thresholds",
    "ToolRules",
]

#: Scopes a budget can be kept for; any other attribute goes as ``tag:<name>``.
SCOPES = ("global", "workspace", "user", "agent", "workflow", "key", "thread", "task_class")
#: Outcomes an LLM call can report. ``provider_error`` is an outage (5xx, a dropped
#: connection); ``request_error`` a request the provider refused (4xx: bad request, key,
#: permission, context window, content policy), which no fallback or retry fixes.
OUTCOMES = (
    "ok",
    "invalid_json",
    "validation_failed",
    "tool_call_error",
    "timeout",
    "rate_limited",
    "provider_error",
    "request_error",
)
Outcome = Literal[
    "ok",
    "invalid_json",
    "validation_failed",
    "tool_call_error",
    "timeout",
    "rate_limited",
    "provider_error",
    "request_error",
]
_ESCALATE: tuple[Outcome, ...] = ("invalid_json", "validation_failed", "tool_call_error")
_FALLBACK: tuple[Outcome, ...] = ("timeout", "rate_limited", "provider_error")
# matched with fullmatch: `$` would also match before a trailing newline ("8h\n")
_WINDOW_RE = re.compile(r"run|total|day|month|[1-9][0-9]*[smhd]")
_TAG_RE = re.compile(r"tag:[A-Za-z0-9_.\-]+")
#: The longest fixed window, in days (ten years); longer ones overflow date arithmetic.
MAX_WINDOW_DAYS = 3650
#: The fields that give a budget its limit, one per metric.
_LIMIT_FIELDS = ("max_cost_usd", "max_tokens", "max_requests")


class _ValidateAs:
    """Validate a field as ``target`` whatever its wider static annotation says.

    ``Policy.prices`` is annotated ``ModelPrice | Mapping[str, float]`` so that type checkers
    accept the fields of a price (``{"input_cost_per_token": ...}``) as well as a
    ``ModelPrice``; at run time every value is validated into a ``ModelPrice``."""

    def __init__(self, target: type[BaseModel]) -> None:
        self.target = target

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return handler.generate_schema(self.target)


#: A model's price as ``Policy.prices`` takes it: a ``ModelPrice`` or its fields (always
#: a ``ModelPrice`` once validated).
PriceSpec = Annotated[ModelPrice | Mapping[str, float], _ValidateAs(ModelPrice)]


#: What a budget counts: dollars, tokens or requests (``Budget.metric``).
Metric = Literal["cost", "tokens", "requests"]


class Limits(_Frozen):
    """Caps on one run. ``None`` means no cap."""

    max_iterations: int | None = Field(default=None, ge=0, description="Model calls in one run.")
    max_tool_calls: int | None = Field(
        default=None, ge=0, description="Tool calls in one run, all tools."
    )
    max_wall_seconds: float | None = Field(
        default=None, gt=0, description="Wall-clock seconds of a run."
    )
    max_input_tokens: int | None = Field(
        default=None, ge=0, description="Prompt tokens in one run."
    )
    max_output_tokens: int | None = Field(
        default=None, ge=0, description="Completion tokens in one run."
    )
    max_cost_usd: float | None = Field(default=None, ge=0, description="Dollars one run may spend.")
    max_retries: int | None = Field(
        default=None, ge=0, description="Model calls made right after a failed one."
    )
    max_consecutive_errors: int | None = Field(
        default=None,
        ge=0,
        description="Failed calls in a row before the run stops: failed model calls since the "
        "last successful one plus failed tool calls since the last successful one (so a "
        "model that keeps calling a failing tool is stopped).",
    )
    max_repeated_tool_calls: int | None = Field(
        default=None,
        ge=1,
        description="Times the same tool with the same arguments may run in a row (loops).",
    )
    final_answer: bool = Field(
        default=False,
        description="Make the last call a cap allows without tools, asking for a final answer.",
    )

    def held_at(self, level: float) -> Limits:
        """These limits with the spend caps (dollars, input and output tokens) at ``level``
        of their figures (``Thresholds.stop``): what a run may use before it stops."""
        if level >= 1:
            return self
        update: dict[str, float | int] = {}
        if self.max_cost_usd is not None:
            update["max_cost_usd"] = self.max_cost_usd * level
        if self.max_input_tokens is not None:
            update["max_input_tokens"] = int(self.max_input_tokens * level)
        if self.max_output_tokens is not None:
            update["max_output_tokens"] = int(self.max_output_tokens * level)
        return self.model_copy(update=update) if update else self


class Budget(_Frozen):
    """A limit for a scope, per distinct value of that scope, over a window.

    ``Budget(scope="user", window="8h", max_cost_usd=5.0)`` gives every user $5 per 8 hours.
    Windows: ``run``, ``total`` (never resets), ``Ns``/``Nm``/``Nh``/``Nd`` (at most ``3650d``),
    ``day``, ``month`` (calendar windows in ``Policy.timezone``). Short windows make rate
    limits.
    """

    scope: str = Field(
        description="global, workspace, user, agent, workflow, key, thread, "
        "task_class, or tag:<name>."
    )
    window: str = Field(default="day", description="run, total, Ns, Nm, Nh, Nd, day or month.")
    max_cost_usd: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    max_requests: int | None = Field(default=None, ge=0)
    overrides: dict[str, float] = Field(
        default_factory=dict,
        description="Limit for named values, e.g. {'vip-user': 50}, in the budget's unit and "
        "checked as its own limit is (whole numbers for tokens and requests).",
    )
    only: list[str] | None = Field(
        default=None, description="Apply only to these values of the scope (default: every value)."
    )
    name: str | None = Field(
        default=None, description="Stable name; defaults to scope/window/metric."
    )
    when_exhausted: Literal["refuse", "wait"] = Field(
        default="refuse",
        description="refuse a call that does not fit, or wait (up to max_wait_seconds) for "
        "the window to free it.",
    )
    max_wait_seconds: float = Field(
        default=0.0, ge=0, description="With when_exhausted='wait': the longest a call waits."
    )
    hard: bool = Field(
        default=True,
        description="While the ledger is unreachable, refuse calls for this budget (with "
        "Policy.ledger_failure='closed'); False: let them go on, counted locally.",
    )

    @field_validator("scope")
    @classmethod
    def _known_scope(cls, value: str) -> str:
        if value in SCOPES or _TAG_RE.fullmatch(value):
            return value
        raise ValueError(
            f"unknown scope {value!r}: use one of {', '.join(SCOPES)}, or 'tag:<name>' "
            "for a custom tag"
        )

    @field_validator("window")
    @classmethod
    def _known_window(cls, value: str) -> str:
        if not _WINDOW_RE.fullmatch(value):
            raise ValueError(
                f"unknown window {value!r}: use run, total, day, month, or a number followed by "
                "s, m, h or d (e.g. '30s', '1m', '8h', '7d')"
            )
        seconds = window_seconds(value)
        if seconds is not None and seconds > MAX_WINDOW_DAYS * 86400:
            raise ValueError(
                f"window {value!r} is longer than {MAX_WINDOW_DAYS}d (ten years): use a shorter "
                "window, or 'total' for a budget that never resets"
            )
        return value

    @field_validator("overrides")
    @classmethod
    def _overrides_like_the_limit(
        cls, overrides: dict[str, float], info: ValidationInfo
    ) -> dict[str, float]:
        """Check each override as the budget's own limit field would check it."""
        limit_field = next((f for f in _LIMIT_FIELDS if info.data.get(f) is not None), None)
        for value, limit in overrides.items():
            _check_override(value, limit, limit_field)
        return overrides

    @model_validator(mode="after")
    def _one_metric(self) -> Budget:
        metrics = [m for m in _LIMIT_FIELDS if getattr(self, m) is not None]
        if len(metrics) != 1:
            raise ValueError(
                "a Budget needs exactly one of max_cost_usd, max_tokens or max_requests "
                f"(got {', '.join(metrics) or 'none'})"
            )
        return self

    @field_validator("only")
    @classmethod
    def _only_names_someone(cls, only: list[str] | None) -> list[str] | None:
        if only is not None and not only:
            raise ValueError(
                "only=[] applies the budget to no value at all: list the values it applies to, "
                "or leave only out (None) to apply it to every value"
            )
        return only

    @model_validator(mode="after")
    def _global_has_one_value(self) -> Budget:
        """A global budget has one value (every run): per-value settings mean nothing there."""
        if self.scope == "global":
            given = [f for f in ("overrides", "only") if getattr(self, f)]
            if given:
                raise ValueError(
                    f"{' and '.join(given)} cannot apply to scope='global', which has one "
                    "value shared by every run: remove them, or use a scope with values such "
                    "as 'user' or 'workspace'"
                )
        return self

    @model_validator(mode="after")
    def _wait_can_wait(self) -> Budget:
        """``when_exhausted="wait"`` needs time to wait and a window that resets."""
        if self.when_exhausted != "wait":
            return self
        if not self.max_wait_seconds > 0:
            raise ValueError(
                "when_exhausted='wait' needs max_wait_seconds > 0, the longest a call may wait "
                "for the window to free it (e.g. max_wait_seconds=30): with 0 no call ever waits"
            )
        if self.window in ("run", "total"):
            raise ValueError(
                f"when_exhausted='wait' needs a window that resets, and {self.window!r} never "
                "does: use a window such as '1m', or when_exhausted='refuse'"
            )
        return self

    @property
    def metric(self) -> Metric:
        """What this budget counts."""
        if self.max_cost_usd is not None:
            return "cost"
        return "tokens" if self.max_tokens is not None else "requests"

    @property
    def limit(self) -> float:
        """The limit for values without an override."""
        value = (
            self.max_cost_usd
            if self.max_cost_usd is not None
            else (self.max_tokens if self.max_tokens is not None else self.max_requests)
        )
        assert value is not None
        return float(value)

    @property
    def key(self) -> str:
        """The stable identifier of this budget in ledgers and events."""
        return self.name or f"{self.scope}/{self.window}/{self.metric}"

    def limit_for(self, value: str) -> float:
        """The limit that applies to one value of the scope."""
        return float(self.overrides.get(value, self.limit))

    def applies_to(self, value: str | None) -> bool:
        """True when this budget counts calls of runs with this scope value."""
        if value is None:
            return False
        return self.only is None or value in self.only


def _check_override(value: str, limit: float, limit_field: str | None) -> None:
    """Raise unless ``limit`` is a limit that ``limit_field`` itself would take: a number
    >= 0 (``inf`` only where the field takes it: dollars), whole for tokens and requests.

    NaN above all: every comparison with it is false, so a NaN limit refuses nothing."""
    where = f"overrides[{value!r}] = {limit!r}"
    if math.isnan(limit):
        raise ValueError(
            f"{where}: NaN is not a limit (nothing would ever be refused); give a number >= 0"
        )
    if limit < 0:
        raise ValueError(f"{where}: overrides must be limits >= 0")
    if limit_field in ("max_tokens", "max_requests") and not limit.is_integer():
        unit = limit_field.removeprefix("max_")
        example = f" such as {math.floor(limit)}" if math.isfinite(limit) else ""
        raise ValueError(
            f"{where}: {limit_field} counts whole {unit}, so an override must be a whole "
            f"number >= 0{example}, as {limit_field} itself must be"
        )


class Thresholds(_Frozen):
    """Levels (fractions of a limit) at which budgetwarden alerts, warns, degrades and stops."""

    alerts: list[float] = Field(default_factory=lambda: [0.5, 0.8])
    warn: float = Field(default=0.8, gt=0, le=1)
    degrade: float = Field(default=0.9, gt=0, le=1)
    stop: float = Field(default=1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.warn <= self.degrade <= self.stop:
            raise ValueError(
                f"thresholds must be ordered warn <= degrade <= stop "
                f"(got warn={self.warn}, degrade={self.degrade}, stop={self.stop})"
            )
        if any(not 0 < level <= 1 for level in self.alerts):
            raise ValueError("alerts must be fractions in (0, 1], e.g. [0.5, 0.8]")
        if list(self.alerts) != sorted(set(self.alerts)):
            raise ValueError("alerts must be distinct and in ascending order, e.g. [0.5, 0.8]")
        return self


class Routing(_Frozen):
    """Which model a call may use: tiers from cheap to strong, escalation and fallbacks."""

    tiers: list[str] = Field(default_factory=list, description="Models, cheapest first.")
    task_classes: dict[str, int | str] = Field(
        default_factory=dict, description="Task class -> starting tier (index or model)."
    )
    escalate_on: list[Outcome] = Field(default_factory=lambda: list(_ESCALATE))
    fallback_on: list[Outcome] = Field(default_factory=lambda: list(_FALLBACK))
    fallbacks: dict[str, list[str]] = Field(
        default_factory=dict, description="Model -> models to try on an outage, in order."
    )
    max_escalations: int = Field(default=2, ge=0)
    downgrade_on_pressure: bool = True
    override_caller_model: bool = Field(
        default=False,
        description="Start a run without a task class on a tier (by complexity, else the "
        "cheapest) even when the caller named a model outside the tiers.",
    )
    skip_unaffordable: bool = Field(
        default=True, description="Try one tier down when a tier's reservation does not fit."
    )

    @field_validator("tiers")
    @classmethod
    def _distinct_named_tiers(cls, tiers: list[str]) -> list[str]:
        """Each tier is one model, named, and in the list once (escalation walks the list)."""
        for index, model in enumerate(tiers):
            if not model.strip():
                raise ValueError(f"tiers[{index}] is an empty model name: name a model or drop it")
            if model in tiers[:index]:
                raise ValueError(
                    f"tiers lists {model!r} twice (at {tiers.index(model)} and {index}): each "
                    "tier is a different model, cheapest first"
                )
        return tiers

    @model_validator(mode="after")
    def _task_classes_name_tiers(self) -> Routing:
        for name, tier in self.task_classes.items():
            if isinstance(tier, int) and not 0 <= tier < len(self.tiers):
                raise ValueError(
                    f"task_classes[{name!r}] = {tier}: tier index out of range "
                    f"(0..{len(self.tiers) - 1})"
                )
            if isinstance(tier, str) and tier not in self.tiers:
                raise ValueError(f"task_classes[{name!r}] = {tier!r} is not one of tiers")
        return self

    def tier_of(self, model: str | None) -> int | None:
        """The index of a model in ``tiers``, or None."""
        try:
            return self.tiers.index(model) if model is not None else None
        except ValueError:
            return None


class ToolRules(_Frozen):
    """Which tools may run, how often, at what price, and which need a person's approval."""

    allow: list[str] | None = Field(
        default=None, description="Only these tools may run (None: all)."
    )
    deny: list[str] = Field(default_factory=list)
    max_calls: dict[str, int] = Field(default_factory=dict, description="Per-tool call caps.")
    price_usd: dict[str, float] = Field(
        default_factory=dict, description="Price of one call of a paid tool, in USD."
    )
    require_approval: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _allowed_or_denied(self) -> ToolRules:
        both = sorted(set(self.allow or ()) & set(self.deny))
        if both:
            raise ValueError(
                f"tools {both} are in both allow and deny: keep each tool in one of them "
                "(deny to stop it, allow to let it run)"
            )
        return self

    @field_validator("max_calls")
    @classmethod
    def _non_negative_caps(cls, caps: dict[str, int]) -> dict[str, int]:
        bad = {tool: cap for tool, cap in caps.items() if cap < 0}
        if bad:
            raise ValueError(f"max_calls must be >= 0 (got {bad})")
        return caps

    @field_validator("price_usd")
    @classmethod
    def _finite_prices(cls, prices: dict[str, float]) -> dict[str, float]:
        """A price is finite dollars >= 0: NaN would count nothing, inf every budget's all."""
        bad = {tool: price for tool, price in prices.items() if not 0 <= price < math.inf}
        if bad:
            raise ValueError(
                f"price_usd must be finite dollars >= 0 per call (got {bad}); to keep a tool "
                "from running, list it in deny instead"
            )
        return prices


class Policy(_Frozen):
    """Everything budgetwarden enforces, in one validated, frozen object."""

    limits: Limits = Field(default_factory=Limits)
    budgets: list[Budget] = Field(default_factory=list)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    routing: Routing | None = None
    tools: ToolRules = Field(default_factory=ToolRules)
    on_exceeded: Literal["partial", "raise", "pause"] = "partial"
    unknown_model: Literal["fallback", "deny"] = "fallback"
    fallback_model: str = "gpt-4o"
    default_max_output_tokens: int = Field(
        default=1024,
        ge=1,
        description="Output tokens reserved for a call that names no max_tokens; a run raises "
        "it to its largest answer so far.",
    )
    prices: Mapping[str, PriceSpec] = Field(
        default_factory=dict,
        description="Prices of your own models: a ModelPrice or its fields, by model name.",
    )
    timezone: str = "UTC"
    ledger_failure: Literal["closed", "open"] = Field(
        default="closed",
        description="When the ledger is unreachable: 'closed' refuses new calls if any budget "
        "is hard (Budget.hard); 'open' counts locally. All-soft budgets always fail open.",
    )
    lease_seconds: float = Field(
        default=300.0, gt=0, description="Lifetime of an unreleased reservation."
    )
    record_content: bool = Field(
        default=False, description="Put prompt and response text in events."
    )
    budget_hints: bool = Field(
        default=False, description="Tell the model what remains past warn level."
    )
    compress_ratio: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Under pressure, keep this share of the prompt's tokens.",
    )
    alerts: AlertRules | None = Field(
        default=None, description="Anomaly and monthly-envelope alert rules (budgetwarden alerts)."
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as 'UTC' or 'Europe/Paris'"
            ) from exc
        return value

    @model_validator(mode="after")
    def _unique_budget_keys(self) -> Policy:
        keys = [b.key for b in self.budgets]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"budgets {dupes} are defined twice: give each a distinct name=")
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, env: bool = True) -> Policy:
        """Load a policy from YAML (``.yaml``/``.yml``), TOML or JSON; env overrides apply on
        top. A file that cannot be read (its syntax, a key given twice) raises
        ``PolicyError``, an invalid value ``ValidationError``: both name the file."""
        data = read_file(Path(path))
        return cls._validated(data, env=env, source=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, env: bool = True) -> Policy:
        """Validate a mapping, with ``BUDGETWARDEN_*`` environment overrides when ``env``
        (a ``BUDGETWARDEN_*`` variable that names no field raises ``PolicyError``)."""
        return cls._validated(data, env=env, source=None)

    @classmethod
    def _validated(cls, data: Mapping[str, Any], *, env: bool, source: str | None) -> Policy:
        """Validate ``data`` with the environment's overrides; a ``ValidationError`` says
        where the values came from (the file, the variables applied)."""
        merged = dict(data)
        applied = apply_env_overrides(merged, os.environ, cls) if env else []
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            sources = ([source] if source else []) + applied
            if not sources:
                raise
            raise name_the_source(exc, " and ".join(sources)) from None

    @classmethod
    def from_env(cls) -> Policy:
        """A policy from ``BUDGETWARDEN_POLICY`` (a file path) and ``BUDGETWARDEN_*`` variables."""
        path = os.environ.get(ENV_PREFIX + "POLICY")
        return cls.from_file(path) if path else cls.from_mapping({})

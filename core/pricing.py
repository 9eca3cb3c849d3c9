"""Prices of LLM calls: the figure ``litellm.cost_per_token`` gives, without importing litellm.

``PriceBook`` reads the cost map LiteLLM ships in its package (located with ``find_spec``,
which does not import litellm) once per process, on first use, and replicates LiteLLM's rules:
name resolution (provider prefixes and inference, Bedrock route/region stripping, the provider
check), ``*_above_<N>k_tokens`` and ``tiered_pricing`` tiers, cache prices, and the provider
cost functions that differ from the generic one. A ``Usage`` is priced as LiteLLM prices
``Usage(prompt_tokens=input_tokens, completion_tokens=output_tokens, cache_read_input_tokens=
cache_read_tokens, cache_creation_input_tokens=cache_write_tokens, reasoning_tokens=...)``.
Where LiteLLM raises for a key of its own map, the entry is priced as its provider prices it;
where LiteLLM returns a silent zero for an unmapped name, ``UnknownModelError`` is raised.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from pydantic import Field, model_validator

from .strict import Strict
from .usage import Usage

__all__ = ["ModelPrice", "PriceBook", "UnknownModelError"]

_IN, _OUT = "input_cost_per_token", "output_cost_per_token"
_READ, _WRITE = "cache_read_input_token_cost", "cache_creation_input_token_cost"
_WRITE_1H = _WRITE + "_above_1hr"  # Anthropic's one-hour cache: twice the input price
_REASON, _GPU = "output_cost_per_reasoning_token", ("gpu_usd_per_hour", "tokens_per_second")
_MAP_FILE = "model_prices_and_context_window_backup.json"
_CHAT_MODES = frozenset({None, "chat", "completion", "responses"})
_TIER_SUFFIXES = ("_auto", "_flex", "_priority", "_fast", "_ultrafast")
#: A provider's service tier and the suffix of the prices LiteLLM bills it at ("fast" at the
#: priority prices, as LiteLLM does); other tiers ("default", "standard", "scale") are
#: billed at the standard prices.
SERVICE_TIER_PRICES = {
    "flex": "flex",
    "priority": "priority",
    "fast": "priority",
    "ultrafast": "ultrafast",
}


def billed_tier(tier: Any) -> str | None:
    """``tier`` when it is a service tier billed at prices of its own, else None (the
    standard prices: OpenAI's ``default``, Anthropic's ``standard``, ``auto``)."""
    return tier if isinstance(tier, str) and tier.lower() in SERVICE_TIER_PRICES else None


_EXTRA_PROVIDERS = frozenset({"litellm_proxy", "github", "vertex_ai_beta"})  # not in the map


def _table(text: str) -> dict[str, str]:  # "a=b c" -> {"a": "b", "c": "c"}
    return {a: b or a for a, _, b in (pair.partition("=") for pair in text.split())}


_VERTEX_KINDS = "chat code-chat text code-text language embedding vision"
#: Entry providers whose bare names LiteLLM's ``get_llm_provider`` routes, and where to.
_BARE_PROVIDERS = _table(
    "openai text-completion-openai anthropic cohere cohere_chat openrouter aleph_alpha nlp_cloud "
    "bedrock watsonx empower gradient_ai ai21=ai21_chat bedrock_converse=bedrock "
    + " ".join(f"vertex_ai-{k}-models=vertex_ai" for k in _VERTEX_KINDS.split())
)
_AZURE_ALIASES = _table(
    "gpt-35-turbo=azure/gpt-35-turbo gpt-35-turbo-16k=azure/gpt-35-turbo-16k ada=azure/ada "
    "gpt-35-turbo-instruct=azure/gpt-35-turbo-instruct azure/gpt-41=gpt-4.1 "
    "azure/gpt-41-mini=gpt-4.1-mini azure/gpt-41-nano=gpt-4.1-nano"
)
_OWN_COST_FUNCTIONS = frozenset(
    _table("vertex_ai anthropic bedrock openai databricks azure gemini deepseek tencent azure_ai")
)
_BEDROCK_GEOS = frozenset({"global", "us", "eu", "apac", "jp", "au", "us-gov"})
_AWS_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d+$")
_NON_TOKEN_PRICE = re.compile(r"_cost_per_(second|character|image|pixel|page|query|request)")
_ROUTER_FEE_ENTRIES = ("model-router", "model_router")


class UnknownModelError(LookupError):
    """No per-token price is known for a model; the message says how to add one."""

    def __init__(self, model: str, reason: str = "is not in LiteLLM's cost map") -> None:
        self.model = model
        super().__init__(
            f"cannot price model {model!r}: it {reason}. Add a price: PriceBook(overrides="
            f"{{{model!r}: ModelPrice(input_cost_per_token=..., output_cost_per_token=...)}}) "
            f"or Policy(prices={{{model!r}: {{'input_cost_per_token': ..., "
            "'output_cost_per_token': ...}})."
        )


class ModelPrice(Strict):
    """Prices of a custom or self-hosted model; overrides LiteLLM's map.

    Give per-token prices in USD, or for a self-hosted model ``gpu_usd_per_hour`` and
    ``tokens_per_second`` (the throughput the GPU sustains): input and output tokens then
    both cost ``gpu_usd_per_hour / 3600 / tokens_per_second``. Cache prices default to the
    input price (no discount), as in LiteLLM's custom pricing.
    """

    input_cost_per_token: float = Field(ge=0, allow_inf_nan=False)
    output_cost_per_token: float = Field(ge=0, allow_inf_nan=False)
    cache_read_input_token_cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cache_creation_input_token_cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    gpu_usd_per_hour: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    tokens_per_second: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    if TYPE_CHECKING:  # the two ways to give a price, for type checkers (the validator checks)

        @overload
        def __init__(
            self,
            *,
            input_cost_per_token: float,
            output_cost_per_token: float,
            cache_read_input_token_cost: float | None = None,
            cache_creation_input_token_cost: float | None = None,
        ) -> None: ...

        @overload
        def __init__(
            self,
            *,
            gpu_usd_per_hour: float,
            tokens_per_second: float,
            cache_read_input_token_cost: float | None = None,
            cache_creation_input_token_cost: float | None = None,
        ) -> None: ...

        def __init__(self, **data: Any) -> None: ...

    @model_validator(mode="before")
    @classmethod
    def _per_token_or_gpu(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        given = [k for k in (_IN, _OUT, *_GPU) if data.get(k) is not None]
        hour, speed = data.get(_GPU[0]), data.get(_GPU[1])
        if (
            given[-2:] == list(_GPU)
            and isinstance(hour, int | float)
            and isinstance(speed, int | float)
        ):
            per_token = hour / 3600 / speed if speed > 0 else None  # else the field check fails
            if per_token is not None and all(data.get(k) in (None, per_token) for k in (_IN, _OUT)):
                return {**data, _IN: per_token, _OUT: per_token}
        if given not in ([_IN, _OUT], list(_GPU)):
            raise ValueError(
                "give either per-token prices (input_cost_per_token and output_cost_per_token) "
                f"or GPU figures (gpu_usd_per_hour and tokens_per_second), not {given}"
            )
        return data


@dataclass(frozen=True, slots=True)
class _Band:
    """Per-token USD rates billed together (one tier of one model)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float
    cache_write_1h: float | None = None  # None: one-hour writes at ``cache_write``


_ZERO = _Band(0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class _Rule:
    """How one model is billed: its bands, and the provider's variations on the formula."""

    base: _Band
    steps: tuple[tuple[float, _Band], ...] = ()  # (exclusive lower bound, band), ascending
    tiers: tuple[tuple[float, float, _Band | None], ...] = ()  # tiered_pricing: (start, end]
    cache: int = 2  # 2: cache prices apply; 1: writes billed as input; 0: all billed as input
    split_reasoning: bool = True  # reasoning tokens at the reasoning rate
    tier_on_total: bool = False  # Dashscope picks the tier by input + cache tokens
    output_by_output: bool = False  # Vertex above_128k: the output rate by output tokens
    fee: float = 0.0  # per prompt token (Azure AI Model Router)
    services: Mapping[str, _Rule] = field(default_factory=dict)  # by SERVICE_TIER_PRICES
    search: float = 0.0  # per hosted web search (search_context_cost_per_query, medium)
    search_once: bool = False  # Gemini 2.x: one charge per grounded prompt, whatever its queries
    one_rate: bool = field(init=False)  # one band, no fee, output not banded: see ``bill``

    def __post_init__(self) -> None:
        one_rate = not (self.steps or self.tiers or self.output_by_output or self.fee)
        object.__setattr__(self, "one_rate", one_rate)

    def band(self, tokens: int) -> _Band:
        """The band LiteLLM bills a request of ``tokens`` prompt tokens at."""
        if self.tiers and tokens > 0:
            tier = self.tiers[-1][2]  # above every range: the last tier
            for lo, hi, band in self.tiers:
                if lo < tokens <= hi:
                    tier = band
                    break
            if tier is not None:
                return tier
        band = self.base
        for bound, step in self.steps:
            if tokens <= bound:
                break
            band = step
        return band

    def service(self, tier: str | None) -> _Rule:
        """The rule a call served at the service ``tier`` is billed by (this one when the
        model has no prices of that tier)."""
        if tier is None or not self.services:
            return self
        return self.services.get(SERVICE_TIER_PRICES.get(tier.lower(), ""), self)

    def bill(self, u: Usage) -> float:
        """USD for one call's tokens and hosted searches, in LiteLLM's order of operations."""
        fields: dict[str, Any] = u.__dict__  # its fields, in one read of the model (run_fast)
        if fields["service_tier"] is not None and self.services:
            served = self.service(fields["service_tier"])
            if served is not self:
                return served.bill(u)
        f: dict[str, int] = fields
        i, o, z, r, w, s = (
            f["input_tokens"],
            f["output_tokens"],
            f["reasoning_tokens"],
            f["cache_read_tokens"],
            f["cache_write_tokens"],
            f["web_search_requests"],
        )
        if self.one_rate and not r and not w and not z and not s:
            # the same figure as below, where every other term is an exact 0.0
            return i * self.base.input + o * self.base.output
        r = r if self.cache else 0
        w = w if self.cache > 1 else 0
        b = (
            self.band(max(i, r + w) if self.tier_on_total else i)
            if self.steps or self.tiers
            else self.base
        )
        text = i - r - w if i > r + w else 0
        prompt = text * b.input + r * b.cache_read + w * b.cache_write + i * self.fee
        if w and b.cache_write_1h is not None and (h := f["cache_write_1h_tokens"]):
            prompt += h * (b.cache_write_1h - b.cache_write)  # those at the one-hour rate
        if self.output_by_output:
            cost = prompt + o * self.band(o).output
        elif z and self.split_reasoning:
            cost = prompt + (max(o - z, 0) * b.output + z * b.reasoning)
        else:
            cost = prompt + o * b.output
        return cost + self.search_cost(s) if s else cost

    def search_cost(self, searches: int) -> float:
        """USD for a call's ``searches`` hosted web searches: one charge for all of them
        where the provider bills a grounded call once (Gemini 2.x), else one each."""
        return self.search if self.search_once else searches * self.search

    def reachable(self, input_tokens: int, output_tokens: int) -> list[_Band]:
        """Every band a request within these bounds can be billed at."""
        top = max(input_tokens, output_tokens) if self.output_by_output else input_tokens
        bands = [self.base, *(b for bound, b in self.steps if top > bound)]
        return bands + [b for lo, _, b in self.tiers if b is not None and lo < input_tokens]


def _dearest(rule: _Rule, bands: Sequence[_Band]) -> tuple[float, float]:
    """The dearest input and output rates among ``bands`` (no cache discount assumed)."""
    dearest_in = max(max(b.input, b.cache_read, b.cache_write) for b in bands) + rule.fee
    dearest_out = max(max(b.output, b.reasoning) for b in bands)
    return dearest_in, dearest_out


def _worst_case(rule: _Rule, input_tokens: int, max_output_tokens: int) -> float:
    """``worst_case_cost`` of a banded rule: the dearest band these bounds can reach."""
    dearest_in, dearest_out = _dearest(rule, rule.reachable(input_tokens, max_output_tokens))
    return input_tokens * dearest_in + max_output_tokens * dearest_out


def _num(info: Mapping[str, Any], key: str) -> float | None:
    """A rate as LiteLLM reads it (a number or a numeric string), or None."""
    value = info.get(key)
    try:
        return float(value) if isinstance(value, int | float | str) else None
    except ValueError:
        return None


def _get(info: Mapping[str, Any], key: str, default: float) -> float:
    value = _num(info, key)
    return default if value is None else value


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _tiers(info: Mapping[str, Any], out: float, reason: float | None) -> tuple[Any, ...]:
    """``tiered_pricing`` rows as (start, end, band), by start: all-or-nothing by prompt size."""
    rows = info.get("tiered_pricing")
    rows = sorted(rows, key=lambda t: t.get("range", [0])[0]) if isinstance(rows, list) else []
    valid = [t for t in rows if len(t.get("range", [])) == 2]
    return tuple((*t["range"], _tier_band(t, out, reason)) for t in valid)


def _tier_band(tier: Mapping[str, Any], out: float, reason: float | None) -> _Band | None:
    inp = _num(tier, _IN)
    if inp is None:
        return None
    t_out = _get(tier, _OUT, out)
    t_reason = _get(tier, _REASON, t_out if _OUT in tier else _or(reason, t_out))
    return _Band(inp, t_out, _get(tier, _READ, inp), _get(tier, _WRITE, inp), t_reason)


def _step(
    info: Mapping[str, Any], key: str, base: _Band, reason: float | None
) -> tuple[float, _Band] | None:
    """One ``input_cost_per_token_above_<N>k_tokens`` tier as (threshold, band), or None."""
    text = key.split("_above_")[1].split("_tokens")[0]
    rate, above = _num(info, key), f"_above_{text}_tokens"
    if rate is None or not re.fullmatch(r"\d+(\.\d+)?k?", text):
        return None
    out, read = _get(info, _OUT + above, base.output), _get(info, _READ + above, base.cache_read)
    write = _get(info, _WRITE + above, base.cache_write)
    write_1h = _num(info, _WRITE_1H + above)
    threshold = float(text.removesuffix("k")) * (1000 if text.endswith("k") else 1)
    hour = write_1h if write_1h is not None else base.cache_write_1h
    return threshold, _Band(rate, out, read, write, _or(reason, out), hour)


def _generic_rule(info: Mapping[str, Any], inclusive: bool = False, split: bool = True) -> _Rule:
    """LiteLLM's ``generic_cost_per_token`` for one entry."""
    inp, out, reason = _get(info, _IN, 0.0), _get(info, _OUT, 0.0), _num(info, _REASON)
    tiers = _tiers(info, out, reason)
    out = _get(info, "output_cost_per_image_token", out) if out == 0.0 else out
    read, write, hour = _get(info, _READ, 0.0), _get(info, _WRITE, 0.0), _num(info, _WRITE_1H)
    base = _Band(inp, out, read, write, _or(reason, out), hour)
    keys = [k for k in info if k.startswith(_IN + "_above_") and not k.endswith(_TIER_SUFFIXES)]
    steps = sorted(filter(None, (_step(info, k, base, reason) for k in keys)), key=lambda s: s[0])
    shift = 0.5 if inclusive else 0.0  # xAI: a prompt at the threshold takes the higher tier
    return _Rule(base, tuple((t - shift, b) for t, b in steps), tiers, split_reasoning=split)


def _entry_rule(provider: str, info: Mapping[str, Any]) -> _Rule | str:
    """The rule LiteLLM's cost function for ``provider`` applies to an entry, or why none."""
    if not (_IN in info or _OUT in info or info.get("tiered_pricing")):
        units = sorted({m[1] for m in map(_NON_TOKEN_PRICE.search, info) if m is not None})
        return f"is priced per {'/'.join(units)}, not per token" if units else "has no price"
    inp, out, reason = _get(info, _IN, 0.0), _get(info, _OUT, 0.0), _num(info, _REASON)
    above_128k = [info.get(f"{k}_above_128k_tokens") for k in (_IN, _OUT)]
    if provider == "vertex_ai" and above_128k != [None, None]:  # no cache or reasoning rates
        out_128k = _get(info, _OUT + "_above_128k_tokens", out)
        above = _Band(_get(info, _IN + "_above_128k_tokens", inp), out_128k, 0.0, 0.0, 0.0)
        base, steps = _Band(inp, out, 0.0, 0.0, out), ((128000.0, above),)
        return _Rule(base, steps, cache=0, split_reasoning=False, output_by_output=True)
    if provider == "perplexity":  # no cache prices, no long-context tiers
        band = _Band(inp, out, 0.0, 0.0, _or(reason, out))
        return _Rule(band, cache=0, split_reasoning=reason is not None)
    if provider == "fireworks_ai":  # cache writes billed as input, reasoning as output
        band = _Band(inp, out, _get(info, _READ, inp), 0.0, out)
        return _Rule(band, cache=1, split_reasoning=False)
    if provider in ("dashscope", "qwencloud", "qwen_ai_platform"):  # cache rates default to input
        flat = _Band(inp, out, _get(info, _READ, inp), _get(info, _WRITE, inp), _or(reason, out))
        return _Rule(flat, tiers=_tiers(info, out, reason), tier_on_total=True)
    if provider == "xai":
        return _generic_rule(info, inclusive=True, split=False)
    if provider == "azure" and info.get("output_cost_per_second") is not None:
        return _Rule(_ZERO)  # billed per second of response time, which a Usage lacks
    tiered = info.get("tiered_pricing") is not None
    if provider in _OWN_COST_FUNCTIONS or inp > 0 or out > 0 or tiered:
        return _generic_rule(info)
    return _Rule(_ZERO)  # LiteLLM's per-second branch, without a response time


def _service_view(info: Mapping[str, Any], suffix: str) -> dict[str, Any] | None:
    """An entry's prices at a service tier: each price its ``_<suffix>`` variant where the
    entry has one, as LiteLLM looks them up; None when it has no price of that tier."""
    ending = "_" + suffix
    if not any(key.endswith(ending) for key in info):
        return None
    view = {k: info.get(k + ending, v) for k, v in info.items() if not k.endswith(_TIER_SUFFIXES)}
    if _REASON + ending not in info and _OUT + ending in info:
        view.pop(_REASON, None)  # reasoning at the tier's output price, not the standard one
    return view


def _priced_entry(provider: str, info: Mapping[str, Any]) -> _Rule | str:
    """``_entry_rule``, with the rules of the service tiers the entry has prices for."""
    rule = _entry_rule(provider, info)
    if isinstance(rule, str):
        return rule
    services = {}
    search, once = _search_price(info), _search_once(info)
    for suffix in sorted(set(SERVICE_TIER_PRICES.values())):
        view = _service_view(info, suffix)
        served = _entry_rule(provider, view) if view is not None else None
        if isinstance(served, _Rule):
            services[suffix] = replace(served, search=search, search_once=once)
    if not (services or search):
        return rule
    return replace(rule, services=services, search=search, search_once=once)


#: Providers whose search grounding LiteLLM bills per grounded prompt unless the entry says
#: ``web_search_billing_unit: per_query`` (Gemini 2.x against Gemini 3).
_PER_PROMPT_SEARCH = frozenset({"gemini", "vertex_ai", "vertex_ai-language-models"})


def _search_once(info: Mapping[str, Any]) -> bool:
    """Whether an entry's searches are billed once per call, however many (Gemini 2.x)."""
    unit = info.get("web_search_billing_unit") or "per_prompt"
    return info.get("litellm_provider") in _PER_PROMPT_SEARCH and unit == "per_prompt"


def _search_price(info: Mapping[str, Any]) -> float:
    """USD per hosted web search: the entry's medium-context price per query, as LiteLLM
    bills Anthropic's searches and OpenAI's by default (0 when it has none)."""
    prices = info.get("search_context_cost_per_query")
    price = prices.get("search_context_size_medium") if isinstance(prices, Mapping) else None
    return float(price) if isinstance(price, int | float) and price > 0 else 0.0


def _fireworks_bucket(model: str) -> str:
    """Fireworks AI's price class for a model the map lacks, by its parameter count."""
    moe = re.search(r"(\d+)x(\d+)b", model.lower())
    total = int(moe[1]) * int(moe[2]) if moe else 999
    if total <= 176:
        return "fireworks-ai-moe-up-to-56b" if total <= 56 else "fireworks-ai-56b-to-176b"
    size = re.search(r"(\d+)b", model.lower())
    billions = float(size[1]) if size else -1.0
    buckets = [(-0.5, "default"), (4, "up-to-4b"), (16, "4.1b-to-16b"), (1e300, "above-16b")]
    return "fireworks-ai-" + next(name for top, name in buckets if billions <= top)


def _bedrock_unrouted(model: str) -> str:
    for prefix in ("bedrock/", "converse/", "invoke/", "openai/", "nova-2/", "nova/"):
        model = model.removeprefix(prefix)
    return model


def _bedrock_base(model: str) -> str:
    """LiteLLM's ``get_bedrock_base_model``: drop route, ARN, throughput, geo and region."""
    custom = re.sub(r"^(bedrock/converse/|bedrock/|converse/)", "", model)
    if custom.startswith(("nova-2/", "nova/")):
        return f"amazon.{custom.split('/')[0]}-custom"
    model = _bedrock_unrouted(model)
    model = model.split("/")[-1] if "arn" in model.lower() else model
    model = re.sub(r"\[\w+\]$", "", re.sub(r"(:\d+):\d+k$", r"\1", model))
    (geo, _, rest), (region, _, path) = model.partition("."), model.partition("/")
    if geo in _BEDROCK_GEOS and rest:
        return rest
    return path if path and _AWS_REGION.match(region) else model


def _strip(model: str, provider: str) -> str:
    """LiteLLM's ``_strip_model_name``: the base name to try when the exact one is missing."""
    if provider in ("bedrock", "bedrock_converse"):
        return _bedrock_base(model)
    if provider in ("vertex_ai", "gemini", "databricks"):
        return re.sub(r"-\d+$", "", model)
    return re.sub(r"(:[^:]*){3}$", "", model) if "ft:" in model else model


def _provider_matches(entry: Mapping[str, Any], provider: str) -> bool:
    """LiteLLM's ``_check_provider_match`` between an entry and the inferred provider."""
    own = str(entry.get("litellm_provider", provider))
    if own in (provider, "None") or provider in ("litellm_proxy", "github"):
        return True
    if provider in ("vertex_ai", "fireworks_ai") and own.startswith(provider):
        return True
    both_bedrock = provider.startswith("bedrock") and own.startswith("bedrock")
    return both_bedrock or (provider == "azure_ai" and own in ("azure", "openai"))


class _Index:
    """The cost map and the lookups LiteLLM derives from it; built once per process."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        skip = ("sample_spec", "fallback_generalizations")
        self.entries = {k: v for k, v in raw.items() if isinstance(v, dict) and k not in skip}
        self.lower = {k.lower(): k for k in self.entries}
        owners = {k: str(v.get("litellm_provider")) for k, v in self.entries.items()}
        self.cohere_chat = {k for k, owner in owners.items() if owner == "cohere_chat"}
        self.providers = set(owners.values()) | _EXTRA_PROVIDERS
        self.routes = _routing_rules(raw.get("fallback_generalizations"))
        self.rules: dict[str, _Rule | str] = {}

    def key(self, name: str) -> str | None:
        """The map key for a name: exact, else case-insensitive (``_get_model_cost_key``)."""
        return name if name in self.entries else self.lower.get(name.lower())

    def provider(self, name: str) -> str | None:
        """The provider ``litellm.get_llm_provider`` infers for a name, or None."""
        prefix, _, rest = name.partition("/")
        if rest and prefix == "cohere" and rest in self.cohere_chat:
            return "cohere_chat"
        if rest and prefix in self.providers:
            text_model = prefix == "anthropic" and rest in ("claude-2", "claude-instant-1")
            return "anthropic_text" if text_model else prefix
        if "ft:gpt-3.5-turbo" in name or "ft:gpt-4" in name or name.startswith("gpt-image"):
            return "openai"
        own = _BARE_PROVIDERS.get(str(self.entries.get(name, {}).get("litellm_provider")))
        if own is not None and not (own == "openai" and name.startswith("ft:")):
            return "anthropic_text" if name in ("claude-2", "claude-instant-1") else own
        return next((provider for pattern, provider in self.routes if pattern.search(name)), None)

    def info_key(self, model: str, provider: str) -> str | None:
        """The entry ``litellm.get_model_info(model, provider)`` reads, or None."""
        model = _AZURE_ALIASES.get(model, model)
        provider = "vertex_ai" if provider == "vertex_ai_beta" else provider
        split = model.split("/", 1)[1] if model.startswith(provider + "/") else model
        stripped, prefixed = _strip(split, provider), f"{provider}/{model}"
        bedrock = provider in ("bedrock", "bedrock_converse")
        unrouted = _bedrock_unrouted(split) if bedrock else split
        combined = model if split != model else prefixed
        for name in (combined, model, unrouted, f"{provider}/{stripped}", stripped, prefixed):
            key = self.key(name)
            if key is not None and _provider_matches(self.entries[key], provider):
                return key
        return None


def _routing_rules(block: Any) -> list[tuple[re.Pattern[str], str]]:
    """The map's routing rules (in ``fallback_generalizations``): regex -> provider."""
    rules = block.get("rules") if isinstance(block, dict) else None
    routes = []
    for rule in rules if isinstance(rules, list) else []:
        info = rule.get("model_info") if isinstance(rule, dict) else None
        provider = info.get("litellm_provider") if isinstance(info, dict) else None
        with contextlib.suppress(re.error):
            if isinstance(provider, str):
                routes.append((re.compile(str(rule.get("pattern")), re.IGNORECASE), provider))
    return routes


def _litellm_rule(index: _Index, name: str) -> _Rule | str | None:
    """The rule ``litellm.cost_per_token(model=name)`` applies, or None where it raises."""
    provider = index.provider(name)
    if provider is None or provider == "lemonade":  # LiteLLM prices every Lemonade model at 0
        return None if provider is None else _Rule(_ZERO)
    bare = name.split("/", 1)[-1]
    keep = name in index.entries or bare not in index.entries
    model = name if keep and provider != "vertex_ai" else bare
    key = index.info_key(model, provider)
    if key is None and provider == "fireworks_ai":
        key = index.info_key(_fireworks_bucket(model), provider)
    rule = None if key is None else _priced_entry(provider, index.entries[key])
    return _with_router_fee(index, model, rule) if provider == "azure_ai" else rule


def _with_router_fee(index: _Index, model: str, rule: _Rule | str | None) -> _Rule | str | None:
    """Azure AI Model Router names pay the router's per-prompt-token fee on top."""
    name = model.lower().removeprefix("azure_ai/")
    if ("model-router" not in name and "model_router" not in name) or name in _ROUTER_FEE_ENTRIES:
        return rule
    fee_key = index.info_key("model_router", "azure_ai")
    fee = _get(index.entries[fee_key], _IN, 0.0) if fee_key else 0.0
    return replace(rule if isinstance(rule, _Rule) else _Rule(_ZERO), fee=max(fee, 0.0))


def _map_rule(index: _Index, name: str) -> _Rule | str:
    """The rule for a name from the map, or why there is none; cached per process."""
    found = index.rules.get(name)
    if found is not None:
        return found
    rule = _litellm_rule(index, name)
    if rule is None and name in index.entries:  # LiteLLM raises: bill as the entry's provider
        own = str(index.entries[name].get("litellm_provider"))
        rule = _priced_entry(_BARE_PROVIDERS.get(own, own.split("-")[0]), index.entries[name])
    if len(index.rules) > 100_000:  # bound the cache against floods of made-up names
        index.rules.clear()
    index.rules[name] = found = rule or "is not in LiteLLM's cost map"
    return found


_INDEX: _Index | None = None
_LOCK = threading.Lock()


def _index() -> _Index:
    """The parsed cost map, loaded on first use and shared by every PriceBook."""
    global _INDEX
    if _INDEX is None:
        with _LOCK:
            if _INDEX is None:
                _INDEX = _Index(_load_cost_map())
    return _INDEX


def _load_cost_map() -> dict[str, Any]:
    """LiteLLM's bundled cost map, read from its package without importing litellm."""
    spec = importlib.util.find_spec("litellm")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if locations and (path := Path(locations[0]) / _MAP_FILE).is_file():
        with path.open(encoding="utf-8") as handle:
            loaded: dict[str, Any] = json.load(handle)
        return loaded
    import litellm  # only when the bundled file is missing: importing litellm takes seconds

    return dict(litellm.model_cost)


def _override_rule(price: ModelPrice) -> _Rule:
    """LiteLLM's custom pricing: cache tokens at the input price unless priced."""
    inp, out = price.input_cost_per_token, price.output_cost_per_token
    read, write = price.cache_read_input_token_cost, price.cache_creation_input_token_cost
    return _Rule(_Band(inp, out, _or(read, inp), _or(write, inp), out), split_reasoning=False)


class PriceBook:
    """Prices of LLM calls in USD: ``litellm.cost_per_token``'s figures, offline and fast.

    ``overrides`` maps model names (matched exactly) to a ``ModelPrice`` or its fields; an
    override wins over LiteLLM's map.
    """

    def __init__(
        self, overrides: Mapping[str, ModelPrice | Mapping[str, float]] | None = None
    ) -> None:
        self._overrides = {
            name: price if isinstance(price, ModelPrice) else ModelPrice.model_validate(dict(price))
            for name, price in (overrides or {}).items()
        }
        self._rules = {name: _override_rule(price) for name, price in self._overrides.items()}
        # model -> (dearest input rate, dearest output rate), for models with a single band
        self._flat: dict[str, tuple[float, float]] = {}

    def cost(self, model: str, usage: Usage) -> float:
        """USD for one call, as ``litellm.cost_per_token``; raises ``UnknownModelError``."""
        return (self._rules.get(model) or self._rule(model)).bill(usage)

    def biller(self, model: str) -> Callable[[Usage], float]:
        """``lambda usage: cost(model, usage)``, resolved once (for callers pricing a model
        over and over); raises ``UnknownModelError`` now rather than per call."""
        return (self._rules.get(model) or self._rule(model)).bill

    def can_price(self, model: str) -> bool:
        """Whether ``cost`` prices this model (an override, or per-token prices in the map)."""
        return model in self._rules or isinstance(_map_rule(_index(), model), _Rule)

    def price(self, model: str) -> ModelPrice:
        """The base per-token prices (lowest tier) ``cost`` bills this model at."""
        if model in self._overrides:
            return self._overrides[model]
        rule = self._rule(model)
        b = rule.band(1)
        read = b.cache_read if rule.cache else b.input
        write = b.cache_write if rule.cache > 1 else b.input
        prices = {_IN: b.input + rule.fee, _OUT: b.output, _READ: read, _WRITE: write}
        return ModelPrice.model_validate(prices)

    def search_price(self, model: str) -> float:
        """USD per search of the provider's hosted web search tool (``Usage.
        web_search_requests``): $0.01 for GPT-5 and Claude, $0.025 for GPT-4.1; 0 for a
        model with no such price. Gemini 2.x bills it once per grounded call, however many
        queries the call ran (``cost`` does; this is the price of that one charge)."""
        rule = self._priced_rule(model)
        return rule.search if rule is not None else 0.0

    def search_cost(self, model: str, searches: int) -> float:
        """USD for ``searches`` hosted web searches of one call on ``model``, as ``cost``
        bills them (once for all of them on Gemini 2.x)."""
        rule = self._priced_rule(model) if searches > 0 else None
        return rule.search_cost(searches) if rule is not None else 0.0

    def _priced_rule(self, model: str) -> _Rule | None:
        """``model``'s rule, or None when it has no price."""
        try:
            return self._rules.get(model) or self._rule(model)
        except UnknownModelError:
            return None

    def cache_discount(self, model: str) -> float:
        """The share of the input price a prompt token read from the provider's cache saves:
        ``1 - cache_read / input`` (0.9 for Claude and GPT-5, 0.5 for GPT-4o), as ``cost``
        bills them; 0 for a model with no price."""
        ratio = self._of_input_price(model, "cache_read_input_token_cost")
        return max(0.0, 1.0 - ratio) if ratio is not None else 0.0

    def cache_write_premium(self, model: str) -> float:
        """The share of the input price a prompt token written to the provider's cache costs
        more: ``cache_write / input - 1`` (0.25 for Claude's five-minute cache; 0 where
        writes cost the input price, as on OpenAI, or for a model with no price)."""
        ratio = self._of_input_price(model, "cache_creation_input_token_cost")
        return max(0.0, ratio - 1.0) if ratio is not None else 0.0

    def _of_input_price(self, model: str, field: str) -> float | None:
        """A cache price of ``model`` (a ``ModelPrice`` field) over its input price, or None
        when the model, that price or an input price is missing."""
        try:
            price = self.price(model)
        except UnknownModelError:
            return None
        part, full = getattr(price, field), price.input_cost_per_token
        return part / full if part is not None and full > 0 else None

    def worst_case_cost(
        self,
        model: str,
        input_tokens: int,
        max_output_tokens: int,
        service_tier: str | None = None,
    ) -> float:
        """An upper bound on ``cost`` for any usage within these bounds, for reservations.

        Every token is priced at the dearest rate it could be billed at: the tier the input
        falls in (or a lower one), no cache discount, reasoning at its own rate if dearer;
        at ``service_tier``'s prices where the model has them (``Usage.service_tier``).
        """
        flat = self.worst_case_rates(model, service_tier)
        if flat is None:  # banded: the bands depend on the token counts
            rule = self._rule(model).service(service_tier)
            return _worst_case(rule, input_tokens, max_output_tokens)
        return input_tokens * flat[0] + max_output_tokens * flat[1]

    def worst_case_rates(
        self, model: str, service_tier: str | None = None
    ) -> tuple[float, float] | None:
        """The (input, output) USD per token ``worst_case_cost`` charges a model billed at
        one rate whatever the size of the call; None for a model with size-dependent tiers."""
        key = model if service_tier is None else f"{model}\x00{service_tier}"
        flat = self._flat.get(key)
        if flat is None:
            rule = self._rule(model).service(service_tier)
            if rule.steps or rule.tiers:
                return None
            flat = self._flat[key] = _dearest(rule, [rule.base])
        return flat

    def models(self) -> list[str]:
        """Every chat, completion or responses model in LiteLLM's map with token prices."""
        entries = _index().entries
        priced = [k for k, v in entries.items() if (_IN in v and _OUT in v) or _tiers(v, 0, None)]
        return sorted(k for k in priced if entries[k].get("mode") in _CHAT_MODES)

    def _rule(self, model: str) -> _Rule:
        rule = self._rules.get(model)
        if rule is None:
            found = _map_rule(_index(), model)
            if isinstance(found, str):
                raise UnknownModelError(model, found)
            self._rules[model] = rule = found
        return rule

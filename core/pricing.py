"""Prices of LLM calls: the figure ``litellm.cost_per_token`` gives, without importing litellm.

``PriceBook`` reads the cost map LiteLLM ships inside its package
(``model_prices_and_context_window_backup.json``, found with ``importlib.util.find_spec``,
which does not import litellm) once per process, when a price is first needed. On top of
the map it replicates LiteLLM's rules: how a name resolves to an entry (provider prefixes,
provider inference for bare names, Bedrock region and version stripping, the provider
check), long-context tiers (``*_above_<N>k_tokens``: the highest threshold the prompt
exceeds prices every token; xAI bills a prompt exactly at a threshold at the higher tier),
``tiered_pricing`` tables, cache read and write prices, and the provider cost functions
that differ from the generic one (Vertex AI ``above_128k``, Perplexity, Fireworks AI,
xAI, Dashscope, Lemonade, Azure per-second models).

A ``Usage`` is priced as LiteLLM prices ``Usage(prompt_tokens=input_tokens,
completion_tokens=output_tokens, cache_read_input_tokens=cache_read_tokens,
cache_creation_input_tokens=cache_write_tokens, reasoning_tokens=reasoning_tokens)``:
cache tokens are part of the prompt, reasoning tokens part of the output (billed at
``output_cost_per_reasoning_token`` where the map has one).
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .usage import Usage

__all__ = ["ModelPrice", "PriceBook", "UnknownModelError"]

_MAP_FILE = "model_prices_and_context_window_backup.json"
_NOT_MODELS = frozenset({"sample_spec", "fallback_generalizations"})
_CHAT_MODES = frozenset({None, "chat", "completion", "responses"})
_TIER_SUFFIXES = ("_auto", "_flex", "_priority", "_fast", "_ultrafast")
#: Prefixes LiteLLM knows as providers although no map entry names them.
_EXTRA_PROVIDERS = frozenset({"litellm_proxy", "github", "vertex_ai_beta"})
#: Entry providers LiteLLM infers for a bare name (``get_llm_provider``), and what they become.
_BARE_PROVIDERS = {
    **{p: p for p in ("openai", "text-completion-openai", "anthropic", "cohere", "cohere_chat",
                      "openrouter", "aleph_alpha", "nlp_cloud", "bedrock", "watsonx", "empower",
                      "gradient_ai")},
    **{f"vertex_ai-{k}-models": "vertex_ai" for k in ("chat", "code-chat", "text", "code-text",
                                                       "language", "embedding", "vision")},
    "ai21": "ai21_chat",
    "bedrock_converse": "bedrock",
}
_AZURE_ALIASES = {"gpt-35-turbo": "azure/gpt-35-turbo", "gpt-35-turbo-16k": "azure/gpt-35-turbo-16k",
                  "gpt-35-turbo-instruct": "azure/gpt-35-turbo-instruct", "ada": "azure/ada",
                  "azure/gpt-41": "gpt-4.1", "azure/gpt-41-mini": "gpt-4.1-mini",
                  "azure/gpt-41-nano": "gpt-4.1-nano"}
_BEDROCK_GEOS = frozenset({"global", "us", "eu", "apac", "jp", "au", "us-gov"})
_AWS_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d+$")
_NON_TOKEN_PRICE = re.compile(r"_cost_per_(second|character|image|pixel|page|query|request)")


class UnknownModelError(LookupError):
    """No per-token price is known for a model; says how to add one."""

    def __init__(self, model: str, reason: str = "is not in LiteLLM's cost map") -> None:
        self.model = model
        super().__init__(
            f"cannot price model {model!r}: it {reason}. Add a price: "
            f"PriceBook(overrides={{{model!r}: ModelPrice(input_cost_per_token=..., "
            f"output_cost_per_token=...)}}) or Policy(prices={{{model!r}: {{...}}}})."
        )


class ModelPrice(BaseModel):
    """Prices of a custom or self-hosted model, overriding LiteLLM's map.

    Give per-token prices (USD) or, for a self-hosted model, ``gpu_usd_per_hour`` and
    ``tokens_per_second`` (the GPU's throughput); then input and output tokens both cost
    ``gpu_usd_per_hour / 3600 / tokens_per_second``. Cache prices default to the input price
    (no discount), as with LiteLLM's custom pricing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_cost_per_token: float = Field(ge=0)
    output_cost_per_token: float = Field(ge=0)
    cache_read_input_token_cost: float | None = Field(default=None, ge=0)
    cache_creation_input_token_cost: float | None = Field(default=None, ge=0)
    gpu_usd_per_hour: float | None = Field(default=None, gt=0)
    tokens_per_second: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _per_token_or_gpu(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        tokens = [k for k in ("input_cost_per_token", "output_cost_per_token") if k in data]
        gpu = [k for k in ("gpu_usd_per_hour", "tokens_per_second") if k in data]
        if len(gpu) == 2 and not tokens:
            hour, speed = data["gpu_usd_per_hour"], data["tokens_per_second"]
            if isinstance(hour, int | float) and isinstance(speed, int | float) and speed > 0:
                per_token = hour / 3600 / speed
                return {**data, "input_cost_per_token": per_token, "output_cost_per_token": per_token}
            return data
        if len(tokens) != 2 or gpu:
            raise ValueError(
                "give either per-token prices (input_cost_per_token and output_cost_per_token) "
                "or GPU figures (gpu_usd_per_hour and tokens_per_second), not "
                f"{sorted([*tokens, *gpu]) or 'neither'}"
            )
        return data


@dataclass(frozen=True, slots=True)
class _Band:
    """Per-token USD rates that apply together (one tier)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float


_ZERO = _Band(0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class _Rule:
    """How one model is billed: its bands and the provider's variations on the formula."""

    base: _Band
    steps: tuple[tuple[float, _Band], ...] = ()  # (exclusive lower bound, band), ascending
    tiers: tuple[tuple[float, float, _Band | None], ...] = ()  # tiered_pricing (start, end]
    cache: int = 2  # 2: read and write priced; 1: write billed as input; 0: all as input
    split_reasoning: bool = True  # reasoning tokens at their own rate
    tier_on_total: bool = False  # Dashscope: tier by input + cache tokens
    output_by_output: bool = False  # Vertex above_128k: output rate by output tokens

    def band(self, tokens: int) -> _Band:
        """The band LiteLLM applies to a request of ``tokens`` (prompt) tokens."""
        if self.tiers and tokens > 0:
            picked = next((b for lo, hi, b in self.tiers if lo < tokens <= hi), self.tiers[-1][2])
            if picked is not None:
                return picked
        band = self.base
        for bound, step in self.steps:
            if tokens <= bound:
                break
            band = step
        return band

    def bill(self, i: int, o: int, r: int, w: int, z: int) -> float:
        """USD for input, output, cache-read, cache-write and reasoning tokens."""
        if self.cache < 2:
            w = 0
        if self.cache < 1:
            r = 0
        b = self.band(max(i, r + w) if self.tier_on_total else i)
        prompt = max(i - r - w, 0) * b.input + r * b.cache_read + w * b.cache_write
        if self.output_by_output:
            return prompt + o * self.band(o).output
        if z and self.split_reasoning:
            return prompt + (max(o - z, 0) * b.output + z * b.reasoning)
        return prompt + o * b.output

    def reachable(self, input_tokens: int, output_tokens: int) -> list[_Band]:
        """Every band a request within these bounds can be billed at."""
        top = max(input_tokens, output_tokens) if self.output_by_output else input_tokens
        bands = [self.base, *(b for bound, b in self.steps if top > bound)]
        return bands + [b for lo, _, b in self.tiers if b is not None and lo < input_tokens]


def _num(info: Mapping[str, Any], key: str) -> float | None:
    """A rate from an entry, as LiteLLM reads it (numbers and numeric strings)."""
    value = info.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _tier_rate(tier: Mapping[str, Any], key: str, fallback: str | None = None) -> float:
    value = _num(tier, key)
    if value is not None:
        return value
    return _or(_num(tier, fallback), 0.0) if fallback is not None else 0.0


def _threshold(key: str) -> tuple[str, float] | None:
    text = key.split("_above_")[1].split("_tokens")[0]
    try:
        return text, float(text.replace("k", "")) * (1000 if "k" in text else 1)
    except ValueError:
        return None


def _generic_rule(info: Mapping[str, Any], inclusive: bool = False, split: bool = True) -> _Rule:
    """LiteLLM's ``generic_cost_per_token`` for one entry."""
    inp, out = _num(info, "input_cost_per_token") or 0.0, _num(info, "output_cost_per_token") or 0.0
    if out == 0.0:
        out = _or(_num(info, "output_cost_per_image_token"), out)
    read, write = _num(info, "cache_read_input_token_cost"), _num(info, "cache_creation_input_token_cost")
    reason = _num(info, "output_cost_per_reasoning_token")
    base = _Band(inp, out, _or(read, 0.0), _or(write, 0.0), _or(reason, out))
    steps = []
    for key in info:
        if not key.startswith("input_cost_per_token_above_") or key.endswith(_TIER_SUFFIXES):
            continue
        parsed, rate = _threshold(key), _num(info, key)
        if parsed is None or rate is None:
            continue
        above = f"_above_{parsed[0]}_tokens"
        o = _or(_num(info, f"output_cost_per_token{above}"), out)
        r = _or(_num(info, f"cache_read_input_token_cost{above}"), _or(read, 0.0))
        w = _or(_num(info, f"cache_creation_input_token_cost{above}"), base.cache_write)
        steps.append((parsed[1] - (0.5 if inclusive else 0.0), _Band(rate, o, r, w, _or(reason, o))))
    tiers: list[tuple[float, float, _Band | None]] = []
    for tier in _valid_tiers(info):
        if "input_cost_per_token" not in tier:
            tiers.append((tier["range"][0], tier["range"][1], None))
            continue
        t_out = _tier_rate(tier, "output_cost_per_token") if "output_cost_per_token" in tier else (
            _num(info, "output_cost_per_token") or 0.0)
        has_reason = "output_cost_per_reasoning_token" in tier or "output_cost_per_token" in tier
        band = _Band(_tier_rate(tier, "input_cost_per_token"), t_out,
                     _tier_rate(tier, "cache_read_input_token_cost", "input_cost_per_token"),
                     _tier_rate(tier, "cache_creation_input_token_cost", "input_cost_per_token"),
                     _tier_rate(tier, "output_cost_per_reasoning_token", "output_cost_per_token")
                     if has_reason else _or(reason, t_out))
        tiers.append((tier["range"][0], tier["range"][1], band))
    return _Rule(base, tuple(sorted(steps, key=lambda s: s[0])), tuple(tiers), split_reasoning=split)


def _valid_tiers(info: Mapping[str, Any]) -> list[dict[str, Any]]:
    tiers = info.get("tiered_pricing")
    if not isinstance(tiers, list):
        return []
    ordered = sorted(tiers, key=lambda t: t.get("range", [0, 0])[0])
    return [t for t in ordered if len(t.get("range", [])) == 2]


def _dashscope_rule(info: Mapping[str, Any]) -> _Rule:
    """LiteLLM's Dashscope calculator: all-or-nothing tiers, cache prices default to input."""
    inp, out = _num(info, "input_cost_per_token") or 0.0, _num(info, "output_cost_per_token") or 0.0
    reason = _num(info, "output_cost_per_reasoning_token")
    flat = _Band(inp, out, _or(_num(info, "cache_read_input_token_cost"), inp),
                 _or(_num(info, "cache_creation_input_token_cost"), inp), _or(reason, out))
    tiers = []
    for tier in _valid_tiers(info):
        t_out = _tier_rate(tier, "output_cost_per_token") if "output_cost_per_token" in tier else out
        t_reason = (_tier_rate(tier, "output_cost_per_reasoning_token")
                    if "output_cost_per_reasoning_token" in tier
                    else t_out if "output_cost_per_token" in tier else flat.reasoning)
        band = _Band(_tier_rate(tier, "input_cost_per_token"), t_out,
                     _tier_rate(tier, "cache_read_input_token_cost", "input_cost_per_token"),
                     _tier_rate(tier, "cache_creation_input_token_cost", "input_cost_per_token"),
                     t_reason)
        tiers.append((tier["range"][0], tier["range"][1], band))
    return _Rule(flat, tiers=tuple(tiers), tier_on_total=True)


def _vertex_128k_rule(info: Mapping[str, Any]) -> _Rule:
    """Vertex AI's ``_handle_128k_pricing``: no cache prices, output tier by output tokens."""
    inp, out = _num(info, "input_cost_per_token") or 0.0, _num(info, "output_cost_per_token") or 0.0
    above = _Band(_or(_num(info, "input_cost_per_token_above_128k_tokens"), inp),
                  _or(_num(info, "output_cost_per_token_above_128k_tokens"), out), 0.0, 0.0, 0.0)
    return _Rule(_Band(inp, out, 0.0, 0.0, out), ((128000.0, above),), cache=0,
                 split_reasoning=False, output_by_output=True)


def _entry_rule(provider: str, info: Mapping[str, Any]) -> _Rule:
    """The rule LiteLLM's cost function for ``provider`` applies to a resolved entry."""
    inp, out = _num(info, "input_cost_per_token") or 0.0, _num(info, "output_cost_per_token") or 0.0
    if provider == "vertex_ai" and any(
        info.get(f"{k}_cost_per_token_above_128k_tokens") is not None for k in ("input", "output")
    ):
        return _vertex_128k_rule(info)
    if provider == "xai":
        return _generic_rule(info, inclusive=True, split=False)
    if provider == "perplexity":  # no cache prices and no long-context tiers
        reason = _num(info, "output_cost_per_reasoning_token")
        return _Rule(_Band(inp, out, 0.0, 0.0, _or(reason, out)), cache=0,
                     split_reasoning=reason is not None)
    if provider == "fireworks_ai":  # cache writes billed as input, reasoning as output
        read = _or(_num(info, "cache_read_input_token_cost"), inp)
        return _Rule(_Band(inp, out, read, 0.0, out), cache=1, split_reasoning=False)
    if provider in ("dashscope", "qwencloud", "qwen_ai_platform"):
        return _dashscope_rule(info)
    if provider == "azure" and info.get("output_cost_per_second") is not None:
        return _Rule(_ZERO)  # priced per second of response time, which a Usage does not carry
    if provider in _OWN_COST_FUNCTIONS or inp > 0 or out > 0 or info.get("tiered_pricing") is not None:
        return _generic_rule(info)
    return _Rule(_ZERO)  # LiteLLM's per-second branch, with no response time


_OWN_COST_FUNCTIONS = frozenset({"vertex_ai", "anthropic", "bedrock", "openai", "databricks", "azure",
                                 "gemini", "deepseek", "tencent", "azure_ai"})
_DATABRICKS_LEGACY = {"dbrx-instruct": "databricks-dbrx-instruct",
                      "meta-llama-3.1-70b-instruct": "databricks-meta-llama-3-1-70b-instruct",
                      "meta-llama-3.1-405b-instruct": "databricks-meta-llama-3-1-405b-instruct",
                      "mixtral-8x7b-instruct-v0.1": "databricks-mixtral-8x7b-instruct",
                      "llama-2-70b-chat": "databricks-llama-2-70b-chat"}


def _databricks_key(model: str) -> str:
    name = model.removeprefix("databricks/")
    return next((v for k, v in _DATABRICKS_LEGACY.items() if name.startswith(k)), name)


def _fireworks_bucket(model: str) -> str:
    """Fireworks AI's price class for a model missing from the map, by parameter count."""
    name = model.lower()
    if moe := re.search(r"(\d+)x(\d+)b", name):
        total = int(moe[1]) * int(moe[2])
        if total <= 176:
            return "fireworks-ai-moe-up-to-56b" if total <= 56 else "fireworks-ai-56b-to-176b"
    if size := re.search(r"(\d+)b", name):
        billions = float(size[1])
        return ("fireworks-ai-up-to-4b" if billions <= 4
                else "fireworks-ai-4.1b-to-16b" if billions <= 16 else "fireworks-ai-above-16b")
    return "fireworks-ai-default"


def _bedrock_base(model: str) -> str:
    """LiteLLM's ``get_bedrock_base_model``: drop routes, ARNs, throughput, geo and region."""
    stripped = next((model[len(p):] for p in ("bedrock/converse/", "bedrock/", "converse/")
                     if model.startswith(p)), model)
    if stripped.startswith(("nova-2/", "nova/")):
        return "amazon.nova-2-custom" if stripped.startswith("nova-2/") else "amazon.nova-custom"
    model = _bedrock_route_free(model)
    if "arn" in model.lower():
        model = model.split("/")[-1]
    model = re.sub(r"\[\w+\]$", "", re.sub(r"(:\d+):\d+k$", r"\1", model))
    geo, _, rest = model.partition(".")
    if geo in _BEDROCK_GEOS and rest:
        return rest
    region, _, rest = model.partition("/")
    return rest if rest and _AWS_REGION.match(region) else model


def _bedrock_route_free(model: str) -> str:
    for prefix in ("bedrock/", "converse/", "invoke/", "openai/", "nova-2/", "nova/"):
        model = model.removeprefix(prefix)
    return model


def _strip(model: str, provider: str) -> str:
    """LiteLLM's ``_strip_model_name``: a base name to try when the exact one is missing."""
    if provider in ("bedrock", "bedrock_converse"):
        return _bedrock_base(model)
    if provider in ("vertex_ai", "gemini", "databricks"):
        return re.sub(r"-\d+$", "", model)
    return re.sub(r"(:[^:]*){3}$", "", model) if "ft:" in model else model


def _provider_matches(entry: Mapping[str, Any], provider: str) -> bool:
    """LiteLLM's ``_check_provider_match``."""
    own = entry.get("litellm_provider")
    if own is None or own == provider:
        return True
    own = str(own)
    return ((provider in ("vertex_ai", "fireworks_ai") and own.startswith(provider))
            or (provider.startswith("bedrock") and own.startswith("bedrock"))
            or provider in ("litellm_proxy", "github")
            or (provider == "azure_ai" and own in ("azure", "openai")))


class _Index:
    """The cost map and the lookups LiteLLM derives from it; built once per process."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.entries: dict[str, dict[str, Any]] = {
            k: v for k, v in raw.items() if isinstance(v, dict) and k not in _NOT_MODELS
        }
        self.lower = {k.lower(): k for k in self.entries}
        self.by_provider: dict[str, set[str]] = {}
        for key, entry in self.entries.items():
            self.by_provider.setdefault(str(entry.get("litellm_provider")), set()).add(key)
        self.providers = set(self.by_provider) | _EXTRA_PROVIDERS
        self.routes = _routing_rules(raw.get("fallback_generalizations"))
        self.rules: dict[str, _Rule | str] = {}

    def key(self, name: str) -> str | None:
        """The map key for a name: exact, else case-insensitive (``_get_model_cost_key``)."""
        return name if name in self.entries else self.lower.get(name.lower())

    def provider(self, name: str) -> str | None:
        """The provider LiteLLM's ``get_llm_provider`` infers for a name, or None."""
        prefix, _, rest = name.partition("/")
        if rest:
            if prefix == "cohere" and rest in self.by_provider.get("cohere_chat", ()):
                return "cohere_chat"
            if prefix == "anthropic" and rest in ("claude-2", "claude-instant-1"):
                return "anthropic_text"
            if prefix in self.providers:
                return prefix
        if "ft:gpt-3.5-turbo" in name or "ft:gpt-4" in name or name.startswith("gpt-image"):
            return "openai"
        own = _BARE_PROVIDERS.get(str(self.entries.get(name, {}).get("litellm_provider")))
        if own == "openai" and name.startswith("ft:") and name.count(":") <= 1:
            own = None
        if own is not None:
            return "anthropic_text" if name in ("claude-2", "claude-instant-1") else own
        return next((provider for pattern, provider in self.routes if pattern.search(name)), None)

    def info_key(self, model: str, provider: str) -> str | None:
        """The entry ``litellm.get_model_info(model, provider)`` reads, or None."""
        model = _AZURE_ALIASES.get(model, model)
        provider = "vertex_ai" if provider == "vertex_ai_beta" else provider
        if provider == "vertex_ai":
            model = self._vertex_alias(model)
        if model.startswith(provider + "/"):
            split = model.split("/", 1)[1]
            combined, stripped, prefixed = model, _strip(split, provider), f"{provider}/{model}"
        else:
            split, combined, stripped = model, f"{provider}/{model}", _strip(model, provider)
            prefixed = combined
        if provider in ("bedrock", "bedrock_converse"):
            split = _bedrock_route_free(split)
        for name in (combined, model, split, f"{provider}/{stripped}", stripped, prefixed):
            key = self.key(name)
            if key is not None and _provider_matches(self.entries[key], provider):
                return key
        return None

    def _vertex_alias(self, model: str) -> str:
        def listed(name: str, *providers: str) -> bool:
            return any(f"vertex_ai/{name}" in self.by_provider.get(p, ()) or name
                       in self.by_provider.get(p, ()) for p in providers)

        if listed("meta/" + model, "vertex_ai-llama_models"):
            return "meta/" + model
        if listed(model + "@latest", "vertex_ai-mistral_models", "vertex_ai-ai21_models"):
            return model + "@latest"
        return model


def _routing_rules(block: Any) -> list[tuple[re.Pattern[str], str]]:
    """The map's routing rules: a regex that sends a bare name to a provider."""
    rules = block.get("rules") if isinstance(block, dict) else None
    routes = []
    for rule in rules if isinstance(rules, list) else []:
        info = rule.get("model_info") if isinstance(rule, dict) else None
        if isinstance(info, dict) and isinstance(info.get("litellm_provider"), str):
            try:
                routes.append((re.compile(str(rule.get("pattern")), re.IGNORECASE),
                               info["litellm_provider"]))
            except re.error:
                continue
    return routes


def _litellm_rule(index: _Index, name: str) -> _Rule | None:
    """The rule ``litellm.cost_per_token(model=name)`` applies, or None where it raises."""
    provider = index.provider(name)
    if provider is None:
        return None
    if provider == "lemonade":
        return _Rule(_ZERO)  # LiteLLM prices every Lemonade (local) model at zero
    bare = name.split("/", 1)[-1]
    model = name if name in index.entries else bare if bare in index.entries else name
    if provider == "vertex_ai":
        model = bare
    elif provider == "databricks":
        model = _databricks_key(model)
    key = index.info_key(model, provider)
    if key is None and provider == "fireworks_ai":
        key = index.info_key(_fireworks_bucket(model), provider)
    return None if key is None else _entry_rule(provider, index.entries[key])


def _has_token_prices(entry: Mapping[str, Any]) -> bool:
    return "input_cost_per_token" in entry or "output_cost_per_token" in entry or bool(
        _valid_tiers(entry))


def _map_rule(index: _Index, name: str) -> _Rule | str:
    """The rule for a name from the map, or why there is none. Cached per process."""
    found = index.rules.get(name)
    if found is not None:
        return found
    rule: _Rule | str | None = _litellm_rule(index, name)
    entry = index.entries.get(name)
    if rule is None and entry is not None:  # LiteLLM raises; price the entry as its provider
        provider = str(entry.get("litellm_provider"))
        rule = _entry_rule(_BARE_PROVIDERS.get(provider, provider.split("-")[0]), entry)
    if entry is not None and not _has_token_prices(entry):
        priced = sorted({m[0] for m in map(_NON_TOKEN_PRICE.search, entry) if m is not None})
        rule = f"is priced by {', '.join(priced)} rather than per token" if priced else (
            "has no price in LiteLLM's cost map")
    if len(index.rules) > 50_000:
        index.rules.clear()
    index.rules[name] = found = rule if rule is not None else "is not in LiteLLM's cost map"
    return found


_INDEX: _Index | None = None
_LOCK = threading.Lock()


def _load_cost_map() -> dict[str, Any]:
    """LiteLLM's bundled cost map, read from its package without importing litellm."""
    spec = importlib.util.find_spec("litellm")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if locations and (path := Path(locations[0]) / _MAP_FILE).is_file():
        with path.open(encoding="utf-8") as handle:
            loaded: dict[str, Any] = json.load(handle)
        return loaded
    import litellm  # only when the bundled file is missing: slow (seconds)

    return dict(litellm.model_cost)


def _index() -> _Index:
    global _INDEX
    if _INDEX is None:
        with _LOCK:
            if _INDEX is None:
                _INDEX = _Index(_load_cost_map())
    return _INDEX


def _override_rule(price: ModelPrice) -> _Rule:
    """LiteLLM's custom pricing: cache tokens at the input price unless given."""
    inp = price.input_cost_per_token
    read, write = price.cache_read_input_token_cost, price.cache_creation_input_token_cost
    band = _Band(inp, price.output_cost_per_token, _or(read, inp), _or(write, inp),
                 price.output_cost_per_token)
    return _Rule(band, split_reasoning=False)


class PriceBook:
    """Prices of LLM calls in USD: LiteLLM's figures, offline and fast, plus overrides.

    ``overrides`` maps a model name (matched exactly) to a ``ModelPrice`` or its fields;
    an override wins over LiteLLM's map.
    """

    def __init__(self, overrides: Mapping[str, ModelPrice | Mapping[str, float]] | None = None) -> None:
        self._overrides = {
            name: price if isinstance(price, ModelPrice) else ModelPrice.model_validate(dict(price))
            for name, price in (overrides or {}).items()
        }
        self._rules = {name: _override_rule(price) for name, price in self._overrides.items()}

    def cost(self, model: str, usage: Usage) -> float:
        """USD for one call: what ``litellm.cost_per_token`` gives for this usage.

        Raises ``UnknownModelError`` when the model has no per-token price.
        """
        rule = self._rules.get(model) or self._rule(model)
        return rule.bill(usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
                         usage.cache_write_tokens, usage.reasoning_tokens)

    def can_price(self, model: str) -> bool:
        """Whether ``cost`` can price this model (an override, or a per-token price in the map)."""
        return model in self._rules or isinstance(_map_rule(_index(), model), _Rule)

    def price(self, model: str) -> ModelPrice:
        """The base per-token prices (lowest tier) of a model, as ``cost`` applies them."""
        if model in self._overrides:
            return self._overrides[model]
        rule = self._rule(model)
        band = rule.band(1)
        return ModelPrice(
            input_cost_per_token=band.input, output_cost_per_token=band.output,
            cache_read_input_token_cost=band.input if rule.cache < 1 else band.cache_read,
            cache_creation_input_token_cost=band.input if rule.cache < 2 else band.cache_write,
        )

    def worst_case_cost(self, model: str, input_tokens: int, max_output_tokens: int) -> float:
        """An upper bound on ``cost`` for any usage within these bounds, for a reservation.

        Every token is priced at the dearest rate it could be billed at: the tier the input
        falls in (or any lower one), no cache discount, reasoning at its own rate if dearer.
        """
        bands = self._rule(model).reachable(input_tokens, max_output_tokens)
        dearest_in = max(max(b.input, b.cache_read, b.cache_write) for b in bands)
        dearest_out = max(max(b.output, b.reasoning) for b in bands)
        return input_tokens * dearest_in + max_output_tokens * dearest_out

    def models(self) -> list[str]:
        """Every chat, completion or responses model in LiteLLM's map with token prices."""
        entries = _index().entries
        return sorted(k for k, v in entries.items() if v.get("mode") in _CHAT_MODES and (
            ("input_cost_per_token" in v and "output_cost_per_token" in v) or _valid_tiers(v)))

    def _rule(self, model: str) -> _Rule:
        rule = self._rules.get(model)
        if rule is not None:
            return rule
        found = _map_rule(_index(), model)
        if isinstance(found, str):
            raise UnknownModelError(model, found)
        self._rules[model] = found
        return found

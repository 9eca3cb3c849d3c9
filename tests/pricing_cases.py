"""Cases for tests/test_pricing.py: the models to compare, their usages, and the exclusions.

Read from LiteLLM's bundled cost map directly (not through budgetwarden), so the tests pick
their own cases. Nothing here imports litellm.
"""

from __future__ import annotations

import importlib.util
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

#: (input, output, cache read, cache write, reasoning) tokens every model is priced for.
BASE_USAGES = (
    (1_000, 500, 0, 0, 0),  # small prompt
    (6_000, 700, 3_000, 1_000, 0),  # cache read and cache write
    (2_000, 3_000, 0, 0, 1_800),  # reasoning
    (9_000, 4_000, 2_000, 3_000, 1_500),  # everything at once
    (0, 250, 0, 0, 0),  # no prompt
)
#: Thresholds tried for every model, besides the ones in the entries its name may resolve to.
COMMON_THRESHOLDS = (200_000,)

#: Pricing ``github_copilot/*`` (or ``chatgpt/*``) in litellm starts a device-code login.
NEVER_CALL_PREFIXES = ("github_copilot/", "chatgpt/")

#: Keys of LiteLLM's map that ``litellm.cost_per_token(model=key)`` itself cannot price (it
#: raises), in litellm 1.102.4's bundled map. PriceBook prices them from their own entry.
LITELLM_CANNOT_PRICE = {
    # get_llm_provider cannot infer a provider: a bare name outside its provider lists,
    # or a prefix that is not a provider (anyscale, palm, amazon-nova)
    **dict.fromkeys(
        [
            *(f"amazon-nova/nova-{size}-v1" for size in ("lite", "micro", "premier", "pro")),
            "anyscale/HuggingFaceH4/zephyr-7b-beta",
            "anyscale/codellama/CodeLlama-34b-Instruct-hf",
            "anyscale/codellama/CodeLlama-70b-Instruct-hf",
            "anyscale/google/gemma-7b-it",
            "anyscale/meta-llama/Llama-2-13b-chat-hf",
            "anyscale/meta-llama/Llama-2-70b-chat-hf",
            "anyscale/meta-llama/Llama-2-7b-chat-hf",
            "anyscale/meta-llama/Meta-Llama-3-70B-Instruct",
            "anyscale/meta-llama/Meta-Llama-3-8B-Instruct",
            "anyscale/mistralai/Mistral-7B-Instruct-v0.1",
            "anyscale/mistralai/Mixtral-8x22B-Instruct-v0.1",
            "anyscale/mistralai/Mixtral-8x7B-Instruct-v0.1",
            "deepseek-chat",
            "deepseek-flash",
            "deepseek-reasoner",
            "deepseek-v3-2-251201",
            "deepseek-v4-flash",
            "deepseek-v4-flash-vision-exp",
            "deepseek-v4-pro",
            "fireworks-ai-4.1b-to-16b",
            "fireworks-ai-56b-to-176b",
            "fireworks-ai-above-16b",
            "fireworks-ai-default",
            "fireworks-ai-embedding-150m-to-350m",
            "fireworks-ai-embedding-up-to-150m",
            "fireworks-ai-moe-up-to-56b",
            "fireworks-ai-up-to-4b",
            "ft:o4-mini-2025-04-16",
            "gemini-exp-1206",
            "gemini-flash-latest",
            "gemini-flash-lite-latest",
            "gemini-pro-latest",
            "glm-4-7-251222",
            "kimi-k2-thinking-251104",
            "palm/chat-bison",
            "palm/chat-bison-001",
            "palm/text-bison",
            "palm/text-bison-001",
            "palm/text-bison-safety-off",
            "palm/text-bison-safety-recitation-off",
            "together-ai-21.1b-41b",
            "together-ai-4.1b-8b",
            "together-ai-41.1b-80b",
            "together-ai-8.1b-21b",
            "together-ai-81.1b-110b",
            "together-ai-up-to-4b",
        ],
        "no provider inferred",
    ),
    # the inferred provider differs from the entry's (azure vs azure_text or openai, ai21_chat
    # vs ai21), so litellm's provider check rejects the entry
    **dict.fromkeys(
        [
            "azure/command-r-plus",
            "azure/gpt-3.5-turbo-instruct-0914",
            "azure/gpt-35-turbo-instruct",
            "azure/gpt-35-turbo-instruct-0914",
            "azure/mistral-large-2402",
            "azure/mistral-large-latest",
            "j2-light",
            "j2-mid",
            "j2-ultra",
            "jamba-1.5",
            "jamba-1.5-large",
            "jamba-1.5-large@001",
            "jamba-1.5-mini",
            "jamba-1.5-mini@001",
            "jamba-large-1.6",
            "jamba-large-1.7",
            "jamba-mini-1.6",
            "jamba-mini-1.7",
        ],
        "provider check fails",
    ),
}

#: Names that are not map keys but that litellm resolves: prefixes, routes, regions, ARNs,
#: versions, fine-tunes, case, aliases, price classes, the Azure AI Model Router fee.
ALIASES = (
    "openai/gpt-4o",
    "openai/GPT-4o",
    "azure_ai/gpt-4o",
    "litellm_proxy/gpt-4o",
    "github/gpt-4o",
    "claude-sonnet-4-5",
    "bedrock/us-east-1/anthropic.claude-3-5-sonnet-20240620-v1:0",
    "bedrock/converse/us.anthropic.claude-3-5-sonnet-20240620-v1:0",
    "bedrock/invoke/anthropic.claude-3-haiku-20240307-v1:0",
    "bedrock/arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
    "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0:51k",
    "us.anthropic.claude-opus-4-6-v1[1m]",
    "vertex_ai/gemini-2.5-pro",
    "vertex_ai/claude-3-5-sonnet@20240620",
    "vertex_ai_beta/gemini-2.5-flash",
    "gemini-2.0-flash-001",
    "gemini/gemini-2.0-flash-001",
    "ft:gpt-4o-mini-2024-07-18:my-org::abc123",
    "ft:gpt-3.5-turbo:my-org:custom:id",
    "fireworks_ai/accounts/fireworks/models/some-new-70b-instruct",
    "fireworks_ai/accounts/fireworks/models/mixtral-8x7b-thing",
    "fireworks_ai/accounts/fireworks/models/tiny-3b",
    "azure/gpt-35-turbo",
    "azure/gpt-41",
    "azure_ai/model-router-2025",
    "cohere/command-r",
    "lemonade/any-local-model",
)

#: Names nobody can price: litellm raises, or returns a silent zero, for each.
UNKNOWN = (
    "my-custom-model",
    "hosted_vllm/gpt-4o",
    "huggingface/meta-llama/Llama-3-8B",
    "claude-newfamily-5",
    "us.anthropic.claude-newfamily-5-v1:0",
)

_ABOVE = re.compile(r"_above_(\d+)(k?)_tokens$")


@cache
def cost_map() -> dict[str, dict[str, Any]]:
    """LiteLLM's bundled cost map, found without importing litellm."""
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations)))
    raw = json.loads((path / "model_prices_and_context_window_backup.json").read_text())
    skip = ("sample_spec", "fallback_generalizations")
    return {k: v for k, v in raw.items() if isinstance(v, dict) and k not in skip}


def priced_chat_models() -> list[str]:
    """Chat, completion and responses models (or no mode) with per-token prices."""
    return sorted(
        key
        for key, entry in cost_map().items()
        if entry.get("mode") in (None, "chat", "completion", "responses")
        and (
            ("input_cost_per_token" in entry and "output_cost_per_token" in entry)
            or isinstance(entry.get("tiered_pricing"), list)
        )
    )


def compared_models() -> list[str]:
    """The models whose PriceBook cost is compared with litellm.cost_per_token."""
    return [
        m
        for m in priced_chat_models()
        if m not in LITELLM_CANNOT_PRICE and not m.startswith(NEVER_CALL_PREFIXES)
    ]


def thresholds(entry: dict[str, Any]) -> list[int]:
    """The prompt sizes where an entry's price changes: its above-N keys and tier bounds."""
    found = set(COMMON_THRESHOLDS)
    for key in entry:
        if match := _ABOVE.search(key):
            found.add(int(match[1]) * (1000 if match[2] else 1))
    for tier in entry.get("tiered_pricing") or []:
        found.update(int(bound) for bound in tier.get("range", []) if bound)
    return sorted(found)


def usages_for(model: str) -> list[tuple[int, int, int, int, int]]:
    """Base usages plus, for each threshold, a prompt exactly at it and one just above it.

    The thresholds are those of the model's entry and of the entries its name may resolve to
    instead (``bedrock/<key>`` for a bare Bedrock Converse key, the key without its prefix).
    """
    cases = list(BASE_USAGES)
    names = (model, f"bedrock/{model}", model.split("/", 1)[-1])
    limits = {t for name in names for t in thresholds(cost_map().get(name, {}))}
    for limit in sorted(limits):
        cases.append((limit, 300, 0, 0, 0))
        cases.append((limit + 1, 300, 1_000, 500, 100))
    cases.append((150_000, 130_000, 0, 0, 0))  # long output too (Vertex above_128k)
    return cases


def provider_prefixed_aliases() -> list[str]:
    """``<provider>/<key>`` for every bare key, and ``<key without prefix>`` for the rest."""
    names = set()
    for key in priced_chat_models():
        if key.startswith(NEVER_CALL_PREFIXES):
            continue
        provider = str(cost_map()[key].get("litellm_provider")).split("-")[0]
        names.add(f"{provider}/{key}" if "/" not in key else key.split("/", 1)[1])
    return sorted(n for n in names if n not in cost_map() and not n.startswith(NEVER_CALL_PREFIXES))

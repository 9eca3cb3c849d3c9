"""Agents SDK tools and handoffs count in the reserved prompt (see test_oa_hot_path too)."""

from __future__ import annotations

from agents import Agent, function_tool
from agents.handoffs import handoff

from budgetwarden.usage import estimate_tokens, tool_tokens


@function_tool
def lookup(city: str, units: str = "metric") -> str:
    """Look up the weather in a city."""
    return city


def test_a_function_tool_counts_its_name_description_and_parameters() -> None:
    bare = estimate_tokens(lookup.name + lookup.description)
    assert tool_tokens(lookup) > bare + 10, "the parameter schema is counted too"


def test_a_handoff_counts_its_tool_definition() -> None:
    billing = handoff(Agent(name="billing", handoff_description="Questions about invoices."))
    assert tool_tokens(billing) >= estimate_tokens(billing.tool_name + billing.tool_description)

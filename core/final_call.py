"""What the last call a cap allows is offered of the agent's tools, by provider.

That call (``Limits(final_answer=True)``, ``Step.final``) asks the model for its best answer
now. Offered no tools, a model cannot call one, which is what the adapters do where the
provider allows it. Two providers do not: Anthropic refuses a request whose messages hold
``tool_use`` or ``tool_result`` blocks but which declares no tools ("Requests which include
tool_use or tool_result blocks must define tools"), and so does Bedrock's Converse API for
every model ("The toolConfig field must be defined when using toolUse and toolResult content
blocks"). An agent's last call always has tool calls in its history, so dropping the tools
there turned the final answer into a provider error. With those providers the call keeps
its tools and forbids their use where the provider can (Anthropic's tool choice ``none``;
Bedrock has none), and a tool call the model still makes is dropped by the adapter.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["FinalTools", "final_call_tools"]

#: ``"drop"``: make the call without tools. ``"forbid"``: keep the tools, with the tool choice
#: ``none``. ``"keep"``: keep the tools as they are (the provider cannot forbid them).
FinalTools = Literal["drop", "forbid", "keep"]

#: Bedrock's own model ids (``anthropic.claude-...``, ``us.amazon.nova-pro-v1:0``,
#: ``meta.llama3-...``): a vendor, after an optional cross-region prefix.
_BEDROCK_MODEL_ID = re.compile(
    r"(?:[a-z]{2,6}\.)?(?:anthropic|amazon|meta|mistral|cohere|ai21|deepseek|writer|qwen"
    r"|openai|twelvelabs)\.[a-z0-9]"
)
_BEDROCK_PROVIDERS = ("bedrock", "amazon_bedrock", "aws")
_BEDROCK_PREFIXES = ("bedrock/", "bedrock_converse/")


def final_call_tools(model: str | None, provider: str | None = None) -> FinalTools:
    """How the final-answer call to ``model`` treats the agent's tools.

    ``provider`` is the framework's name for the provider when it has one (LangChain's
    ``ls_provider``, CrewAI's ``LLM.provider``); otherwise the model's name decides
    (``claude-*``, ``anthropic/...``, ``bedrock/...`` and Bedrock model ids keep their tools).
    Keeping tools is never refused by a provider, so an unsure case keeps them.
    """
    name = (model or "").strip().lower()
    kind = (provider or "").strip().lower()
    if _on_bedrock(name, kind):
        return "keep"
    if kind.startswith("anthropic") or name.startswith("anthropic/") or "claude" in name:
        return "forbid"
    return "drop"


def _on_bedrock(name: str, kind: str) -> bool:
    if kind.startswith(_BEDROCK_PROVIDERS) or name.startswith(_BEDROCK_PREFIXES):
        return True
    return _BEDROCK_MODEL_ID.match(name.rsplit("/", 1)[-1]) is not None

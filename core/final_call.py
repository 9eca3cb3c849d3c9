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

The notes a call near a cap carries (the budget hint, the final-answer instruction) go last in
its messages, where they leave the prompt's cached prefix as it was (a note in the system
prompt made every hinted call a full cache miss). ``note_role`` says which role they take.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["FinalTools", "NoteRole", "final_call_tools", "note_role"]

#: ``"drop"``: make the call without tools. ``"forbid"``: keep the tools, with the tool choice
#: ``none``. ``"keep"``: keep the tools as they are (the provider cannot forbid them).
FinalTools = Literal["drop", "forbid", "keep"]

#: Bedrock's own model ids (``anthropic.claude-...``, ``us.amazon.nova-pro-v1:0``,
#: ``meta.llama3-...``): a vendor, after an optional cross-region prefix.
_BEDROCK_MODEL_ID = re.compile(
    r"(?:[a-z]{2,6}\.)?(?:anthropic|amazon|meta|mistral|cohere|ai21|deepseek|writer|qwen"
    r"|openai|twelvelabs)\.[a-z0-9]"
)
#: The role of a note at the end of a call's messages.
NoteRole = Literal["system", "user"]

_BEDROCK_PROVIDERS = ("bedrock", "amazon_bedrock", "aws")
_BEDROCK_PREFIXES = ("bedrock/", "bedrock_converse/")


def final_call_tools(model: str | None, provider: str | None = None) -> FinalTools:
    """How the final-answer call to ``model`` treats the agent's tools.

    ``provider`` is the framework's name for the provider when it has one (LangChain's
    ``ls_provider``, CrewAI's ``LLM.provider``); otherwise the model's name decides
    (``claude-*``, ``anthropic/...``, ``bedrock/...`` and Bedrock model ids keep their tools).
    Keeping tools is never refused by a provider, so an unsure case keeps them.
    """
    name, kind = _lower(model), _lower(provider)
    if _on_bedrock(name, kind):
        return "keep"
    return "forbid" if _on_anthropic(name, kind) else "drop"


def note_role(model: str | None, provider: str | None = None) -> NoteRole:
    """The role of a note added at the end of a call's messages: ``"user"`` for Anthropic,
    whose clients (LiteLLM, CrewAI's) move every system message into the request's one system
    prompt, so a system note would change the start of the prompt and lose its cache (the API
    merges consecutive user turns); ``"system"`` elsewhere (OpenAI takes a system message
    anywhere; Bedrock's Converse API wants user and assistant turns to alternate)."""
    name, kind = _lower(model), _lower(provider)
    return "user" if _on_anthropic(name, kind) and not _on_bedrock(name, kind) else "system"


def _lower(text: str | None) -> str:
    return (text or "").strip().lower()


def _on_anthropic(name: str, kind: str) -> bool:
    return kind.startswith("anthropic") or name.startswith("anthropic/") or "claude" in name


def _on_bedrock(name: str, kind: str) -> bool:
    if kind.startswith(_BEDROCK_PROVIDERS) or name.startswith(_BEDROCK_PREFIXES):
        return True
    return _BEDROCK_MODEL_ID.match(name.rsplit("/", 1)[-1]) is not None

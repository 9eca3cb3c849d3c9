"""A canned OpenAI chat-completions endpoint, for agents that use the real OpenAI clients.

``ChatOpenAI`` and the Agents SDK's ``OpenAIChatCompletionsModel`` build each request and
parse each response as they do in production; only the HTTP exchange is answered here (an
``httpx.MockTransport``), so no network is used. The script: a tool call on turns
1..steps of each conversation (turns counted from the assistant messages sent), then an
answer; usage is reported like OpenAI's.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx

BASE_URL = "http://canned-openai.invalid/v1"
_ids = itertools.count()


def transport(steps: int, tool: str, argument: str) -> httpx.MockTransport:
    """An OpenAI-compatible chat-completions endpoint that calls ``tool`` ``steps`` times."""

    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)["messages"]
        turn = 1 + sum(1 for message in sent if message.get("role") == "assistant")
        n = next(_ids)
        message: dict[str, Any]
        if turn > steps:
            message = {"role": "assistant", "content": "Nothing counts in the loop."}
            finish = "stop"
        else:
            arguments = json.dumps({argument: f"step {turn}"})
            call = {"name": tool, "arguments": arguments}
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": f"call_{n}", "type": "function", "function": call}],
            }
            finish = "tool_calls"
        return httpx.Response(
            200,
            json={
                "id": f"chatcmpl-{n}",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 600, "completion_tokens": 40, "total_tokens": 640},
            },
        )

    return httpx.MockTransport(answer)

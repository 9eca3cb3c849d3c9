"""An agent's transcript at a refused call, and putting it back when a paused crew resumes.

CrewAI's agent executor starts every task from its prompt (``invoke`` clears its messages),
so a resumed task would redo its model calls. The transcript kept at the refusal goes back in
place of the fresh prompt at the first model call of that agent in the resumed kickoff: the
refused call is then made with everything the agent had done, and nothing before it again.
"""

from __future__ import annotations

import json
import threading
from typing import Any

__all__ = ["ResumePoint", "agent_role", "plain_messages"]


def plain_messages(messages: Any) -> list[dict[str, Any]]:
    """The messages as plain JSON data (what a pause handle can keep)."""
    if not isinstance(messages, list):
        return []
    data = json.loads(json.dumps(messages, default=str))
    return [m for m in data if isinstance(m, dict)]


def agent_role(agent: Any) -> str | None:
    """The role that names an agent across processes (CrewAI agents are found by role)."""
    role = getattr(agent, "role", None)
    return role if isinstance(role, str) else None


class ResumePoint:
    """Where a paused task goes on: its agent's role and transcript at the refused call."""

    def __init__(self, role: str, messages: list[dict[str, Any]]) -> None:
        self.role = role
        self.messages = messages
        self.restored = False
        self._lock = threading.Lock()

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ResumePoint | None:
        """The resume point a pause handle's state names, if it kept a transcript."""
        transcript = state.get("transcript")
        if not isinstance(transcript, dict):
            return None
        role, messages = transcript.get("role"), transcript.get("messages")
        if not isinstance(role, str) or not isinstance(messages, list):
            return None
        return cls(role, messages)

    def restore(self, executor: Any, agent: Any, messages: Any) -> bool:
        """At that agent's first executor call: put the transcript in place of the fresh
        prompt (only if the prompt is how the transcript starts: the same crew and inputs)."""
        if executor is None or agent_role(agent) != self.role or not isinstance(messages, list):
            return False
        with self._lock:
            if self.restored:
                return False
            self.restored = True
        fresh = plain_messages(messages)
        if len(fresh) > len(self.messages) or self.messages[: len(fresh)] != fresh:
            return False
        messages[:] = [dict(message) for message in self.messages]
        return True

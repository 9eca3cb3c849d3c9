"""Test session setup: everything offline, every framework's telemetry off."""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="bw-test-home-")

# Set before any framework or litellm import, so nothing reaches for the network.
os.environ.update(
    {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "CREWAI_DISABLE_TELEMETRY": "true",
        "CREWAI_DISABLE_TRACKING": "true",
        "CREWAI_TRACING_ENABLED": "false",
        "OTEL_SDK_DISABLED": "true",
        "OPENAI_AGENTS_DISABLE_TRACING": "true",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGSMITH_TRACING": "false",
        "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "sk-test-offline"),
        "HOME": _HOME,
        "CREWAI_STORAGE_DIR": os.path.join(_HOME, "crewai"),
    }
)

from typing import Any  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def reserved_steps(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ``Step`` of every model call reserved from now on, sync or async, in order."""
    from budgetwarden.run import Run

    steps: list[Any] = []
    reserve, areserve = Run.before_llm_call, Run.abefore_llm_call

    def recording(run: Run, *args: Any, **kwargs: Any) -> Any:
        steps.append(step := reserve(run, *args, **kwargs))
        return step

    async def arecording(run: Run, *args: Any, **kwargs: Any) -> Any:
        steps.append(step := await areserve(run, *args, **kwargs))
        return step

    monkeypatch.setattr(Run, "before_llm_call", recording)
    monkeypatch.setattr(Run, "abefore_llm_call", arecording)
    return steps

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

"""Process setup for every benchmark: offline, telemetry off, a throwaway HOME.

Imported first by ``benchmarks.__main__`` (and by worker processes) so that no framework or
LiteLLM import reaches for the network or writes to the real home folder.
"""

from __future__ import annotations

import os
import tempfile

_HOME = os.environ.get("BW_BENCH_HOME") or tempfile.mkdtemp(prefix="bw-bench-home-")

OFFLINE = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "OTEL_SDK_DISABLED": "true",
    "OPENAI_AGENTS_DISABLE_TRACING": "true",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
    "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "sk-bench-offline"),
    "HOME": _HOME,
    "CREWAI_STORAGE_DIR": os.path.join(_HOME, "crewai"),
    "BW_BENCH_HOME": _HOME,
}


def setup() -> None:
    """Set the offline environment (idempotent; children inherit it)."""
    os.environ.update(OFFLINE)


setup()

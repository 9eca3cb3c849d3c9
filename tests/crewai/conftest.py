"""CrewAI adapter tests: offline, telemetry and tracing off, HOME in a temporary folder.

The session-wide tests/conftest.py sets the same variables before any import; they are set
here too (if missing) so this folder also runs on its own. Without them CrewAI waits about
11 s at exit and writes to the home folder.
"""

from __future__ import annotations

import os
import tempfile

if "CREWAI_STORAGE_DIR" not in os.environ:
    _home = tempfile.mkdtemp(prefix="bw-crewai-home-")
    os.environ["HOME"] = _home
    os.environ["CREWAI_STORAGE_DIR"] = os.path.join(_home, "crewai")
for _name, _value in {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "OTEL_SDK_DISABLED": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "OPENAI_API_KEY": "sk-test-offline",
}.items():
    os.environ.setdefault(_name, _value)

import pytest  # noqa: E402
from crewai.hooks.dispatch import InterceptionPoint, get_hooks  # noqa: E402


@pytest.fixture(autouse=True)
def _no_global_hooks_left_behind():  # type: ignore[no-untyped-def]
    """Every test must leave CrewAI's global hook registry as it found it."""
    before = {point: get_hooks(point) for point in InterceptionPoint}
    yield
    after = {point: get_hooks(point) for point in InterceptionPoint}
    assert after == before, "a guarded kickoff leaked hooks into CrewAI's global registry"

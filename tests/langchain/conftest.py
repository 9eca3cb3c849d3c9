"""Fixtures for the LangChain adapter tests."""

from __future__ import annotations

import pytest
from lc_fakes import Clock, CountedTool, ScriptedChatModel


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def search() -> CountedTool:
    return CountedTool()


@pytest.fixture
def model() -> ScriptedChatModel:
    return ScriptedChatModel()

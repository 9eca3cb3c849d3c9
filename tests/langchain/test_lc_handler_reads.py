"""The handler's one-pass reads agree with the general readers they stand in for."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult

from budgetwarden.integrations.langchain._convert import (
    max_tokens_of,
    model_and_max_tokens,
    model_from_result,
    model_from_start,
    usage_from_result,
)
from budgetwarden.integrations.langchain.handler import _answer_of, _first_message

PARAMS: list[dict[str, Any] | None] = [
    None,
    {},
    {"_type": "fake", "stop": None, "tools": []},
    {"model_name": "gpt-4o", "max_tokens": 64},
    {"model": "", "max_completion_tokens": 0, "num_predict": 12},
    {"deployment_name": "azure-4o", "max_output_tokens": True},
    {"max_tokens": 32},
    {"model_id": "claude"},
]
METADATA: list[dict[str, Any] | None] = [
    None,
    {},
    {"ls_model_name": "gpt-4o-mini", "ls_max_tokens": 100},
    {"ls_model_name": "", "ls_max_tokens": -1},
    {"ls_model_name": 3, "ls_max_tokens": False},
]
SERIALIZED: list[dict[str, Any] | None] = [
    None,
    {"kwargs": {"model": "from-kwargs"}},
    {"kwargs": "not a mapping"},
]


@pytest.mark.parametrize("serialized", SERIALIZED)
@pytest.mark.parametrize("metadata", METADATA)
@pytest.mark.parametrize("params", PARAMS)
def test_model_and_max_tokens_read_as_the_two_readers_do(
    serialized: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    params: dict[str, Any] | None,
) -> None:
    assert model_and_max_tokens(serialized, metadata, params) == (
        model_from_start(serialized, metadata, params),
        max_tokens_of(params, metadata),
    )


def answer(**fields: Any) -> AIMessage:
    return AIMessage("done", **fields)


USAGE = {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}
RESULTS = [
    LLMResult(generations=[[ChatGeneration(message=answer(usage_metadata=USAGE))]]),
    LLMResult(
        generations=[[ChatGeneration(message=answer(response_metadata={"model_name": "m1"}))]],
        llm_output={"token_usage": {"prompt_tokens": 5, "completion_tokens": 1}, "model": "m2"},
    ),
    LLMResult(generations=[[ChatGeneration(message=answer())]], llm_output={"model_name": "m3"}),
    LLMResult(generations=[[Generation(text="plain")]], llm_output={"model_name": "m4"}),
    LLMResult(generations=[]),
    LLMResult(
        generations=[
            [ChatGeneration(message=answer(usage_metadata=USAGE))],
            [ChatGeneration(message=answer(usage_metadata=USAGE))],
        ]
    ),
]


@pytest.mark.parametrize("result", RESULTS)
def test_the_answer_is_read_as_the_general_readers_do(result: LLMResult) -> None:
    message, usage, model = _answer_of(result)
    first = _first_message(result)
    assert (type(message), getattr(message, "content", None)) == (
        type(first),
        getattr(first, "content", None),
    )
    assert usage == usage_from_result(result)
    assert model == model_from_result(result)

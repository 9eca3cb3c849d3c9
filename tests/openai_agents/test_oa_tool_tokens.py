"""What an Agents SDK call's reservation counts: its tools and handoffs (see test_oa_hot_path
too), and a conversation the server keeps."""

from __future__ import annotations

import itertools
from typing import Any

from agents import Agent, Runner, function_tool
from agents.handoffs import handoff
from oa_scripted import ScriptedModel, tool_call

from budgetwarden.integrations.openai_agents import BudgetRunHooks
from budgetwarden.integrations.openai_agents._translate import estimate_input_tokens
from budgetwarden.usage import estimate_tokens, tool_tokens


@function_tool
def lookup(city: str, units: str = "metric") -> str:
    """Look up the weather in a city."""
    return city


def test_a_function_tool_counts_its_name_description_and_parameters() -> None:
    bare = estimate_tokens(lookup.name + lookup.description)
    assert tool_tokens(lookup) > bare + 10, "the parameter schema is counted too"


def test_a_handoff_counts_its_tool_definition() -> None:
    billing = handoff(Agent(name="billing", handoff_description="Questions about invoices."))
    assert tool_tokens(billing) >= estimate_tokens(billing.tool_name + billing.tool_description)


# ---- conversations the server keeps ------------------------------------------------------


def reserved_prompts(hooks: BudgetRunHooks) -> list[int]:
    """The prompt tokens each of the hooks' reservations holds (recorded as they are made)."""
    prompts: list[int] = []
    reserve = hooks._reservation

    def recording(*args: Any) -> Any:
        async def reserved() -> Any:
            step = await reserve(*args)
            prompts.append(step.input_tokens)
            return step

        return reserved()

    hooks._reservation = recording  # type: ignore[method-assign]
    return prompts


def looping_agent(tools: Any) -> tuple[Agent[Any], ScriptedModel]:
    model = ScriptedModel(usage=(5000, 50, 0, 0), loop_tool=None)
    model.turns = [[tool_call("search", {"q": "a"})], [tool_call("search", {"q": "b"})]]
    return Agent(name="r", instructions="Research.", model=model, tools=[tools.search]), model


async def test_a_server_kept_conversation_reserves_what_the_provider_bills_again(
    make_warden: Any, tools: Any
) -> None:
    # With previous_response_id the SDK sends only each turn's new items, and OpenAI bills
    # the whole conversation again: the reservation adds the last call's billed tokens.
    agent, model = looping_agent(tools)
    hooks = BudgetRunHooks(make_warden())
    prompts = reserved_prompts(hooks)
    await Runner.run(
        agent, "find", hooks=hooks, previous_response_id="resp_0", auto_previous_response_id=True
    )
    assert [len(sent) for sent in model.inputs] == [1, 1, 1], "only new items were sent"
    assert prompts[0] < 200 and all(prompt > 5050 for prompt in prompts[1:])
    # the last bill once: not also what the first estimate missed of it (Run.prompt_gap)
    assert all(prompt < 5050 + 200 for prompt in prompts[1:])


async def test_a_client_kept_conversation_reserves_its_own_items(
    make_warden: Any, tools: Any
) -> None:
    agent, model = looping_agent(tools)
    hooks = BudgetRunHooks(make_warden())
    prompts = reserved_prompts(hooks)
    await Runner.run(agent, "find", hooks=hooks)
    assert [len(sent) for sent in model.inputs] == [1, 3, 5], "the whole history each turn"
    # Nothing the server keeps is added. The scripted bill, 5,000 a call, is far above the
    # estimate: from the second call on, what the last estimate missed of it is added
    # (Run.prompt_gap), so each reservation is the last bill and the history's growth.
    history = [estimate_input_tokens("Research.", sent) for sent in model.inputs]
    assert len(prompts) == 3 and prompts[0] < 400
    assert [prompt - 5000 for prompt in prompts[1:]] == [
        after - before for before, after in itertools.pairwise(history)
    ]


# ---- images ------------------------------------------------------------------------------

SCREENSHOT = "data:image/png;base64," + "iVBORw0KGgo" * 40_000  # ~440 KB of base64


def test_input_images_and_screenshots_count_as_images_not_as_base64() -> None:
    from budgetwarden.usage import IMAGE_TOKENS

    question = {"role": "user", "content": [{"type": "input_text", "text": "What is this?"}]}
    with_image = {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": SCREENSHOT, "detail": "auto"},
        ],
    }
    screenshot = {
        "type": "computer_call_output",
        "call_id": "c1",
        "output": {"type": "computer_screenshot", "image_url": SCREENSHOT},
    }
    tool_image = {
        "type": "function_call_output",
        "call_id": "c2",
        "output": [{"type": "input_image", "image_url": SCREENSHOT}],
    }
    base = estimate_input_tokens(None, [question])
    assert estimate_input_tokens(None, [with_image]) == base + IMAGE_TOKENS
    for item in (screenshot, tool_image):
        assert IMAGE_TOKENS <= estimate_input_tokens(None, [item]) < IMAGE_TOKENS + 20


def test_an_input_filter_that_trims_the_history_is_not_taken_for_a_server_conversation() -> None:
    from budgetwarden.integrations.openai_agents._translate import InputTokens

    tokens = InputTokens()
    turn = [{"role": "user", "content": "x" * 4000} for _ in range(3)]  # ~3,000 tokens
    first = tokens.estimate("Research.", turn)
    tokens.billed = first + 50  # what the provider billed for it
    trimmed = [{"role": "user", "content": "y" * 4000} for _ in range(3)]  # the last 3 items
    assert tokens.estimate("Research.", trimmed) == first, "its own items only"
    tokens.billed = first + 50
    new_only = [{"type": "function_call_output", "call_id": "c", "output": "result"}]
    assert tokens.estimate("Research.", new_only) > first, "plus the conversation billed"


def test_an_input_file_counts_its_pages_not_its_base64() -> None:
    import base64
    import zlib

    from budgetwarden.documents import PAGE_TOKENS

    pages = b"\n".join([b"<< /Type /Page /Parent 2 0 R >>"] * 4)
    stream = zlib.compress(pages)
    head = b"1 0 obj\n<< /Type /ObjStm /N 4 /First 0 /Length %d >>\nstream\n" % len(stream)
    raw = b"%PDF-1.7\n" + head
    raw += stream + b"\nendstream\nendobj\n" + bytes(range(256)) * 4096 + b"%%EOF"
    data = "data:application/pdf;base64," + base64.b64encode(raw).decode()
    question = {"role": "user", "content": [{"type": "input_text", "text": "Summarise."}]}
    with_file = {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Summarise."},
            {"type": "input_file", "filename": "report.pdf", "file_data": data},
        ],
    }
    base = estimate_input_tokens(None, [question])
    assert estimate_input_tokens(None, [with_file]) == base + 4 * PAGE_TOKENS


def test_input_audio_counts_its_length_not_its_base64() -> None:
    import base64
    import io
    import wave

    from budgetwarden.documents import AUDIO_TOKENS_PER_SECOND

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * 16_000 * 20)
    data = base64.b64encode(buffer.getvalue()).decode()
    audio = {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
    with_audio = {"role": "user", "content": [audio]}
    assert estimate_input_tokens(None, [with_audio]) == 20 * AUDIO_TOKENS_PER_SECOND + 4

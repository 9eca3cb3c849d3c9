"""Images count as the tokens providers bill for them, not as the length of their base64.

A browser agent sends a screenshot at every step: counted as text, a 500 KB PNG read as
about 170,000 tokens, and a $1 run cap refused the first call that carried one.
"""

from __future__ import annotations

import base64

import pytest

from budgetwarden import Limits, Policy
from budgetwarden.usage import IMAGE_TOKENS, estimate_message_tokens

from .helpers import make_warden

PNG = base64.b64encode(bytes(range(256)) * 2000).decode()  # ~680 KB of base64
DATA_URL = f"data:image/png;base64,{PNG}"
TEXT = "What is on this page?"

BLOCKS = {
    "openai chat": {"type": "image_url", "image_url": {"url": DATA_URL, "detail": "high"}},
    "openai responses": {"type": "input_image", "image_url": DATA_URL},
    "anthropic": {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    },
    "langchain v1": {"type": "image", "base64": PNG, "mime_type": "image/png"},
}


@pytest.mark.parametrize("block", BLOCKS.values(), ids=BLOCKS.keys())
def test_an_image_block_counts_as_one_image(block: dict[str, object]) -> None:
    message = {"role": "user", "content": [{"type": "text", "text": TEXT}, block]}
    text_only = estimate_message_tokens([{"role": "user", "content": TEXT}])
    assert estimate_message_tokens([message]) == text_only + IMAGE_TOKENS


def test_a_screenshot_a_step_stays_within_a_dollar() -> None:
    # Ten steps of a browser agent on gpt-4o, each re-sending every screenshot so far: the
    # tenth carries ten, about 16,000 tokens ($0.04). Read as text, each screenshot was
    # ~255,000 tokens ($0.64), so the second step was refused by the $1 cap.
    warden, _, _ = make_warden(Policy(limits=Limits(max_cost_usd=1.0)))
    run = warden.run()
    history: list[dict[str, object]] = []
    for _ in range(10):
        history.append({"role": "user", "content": [BLOCKS["openai chat"]]})
        step = run.before_llm_call("gpt-4o", history, max_tokens=100)
        assert step.input_tokens < (IMAGE_TOKENS + 10) * len(history)
        run.release(step)

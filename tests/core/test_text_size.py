"""Text beyond ASCII is estimated by its UTF-8 bytes, not its characters.

Tokenizers spend about a token per four ASCII characters but nearer one per Chinese or
Japanese character: counted by characters, a Chinese prompt read as a third of its tokens
and was reserved for a third of its cost.
"""

from __future__ import annotations

import pytest

from budgetwarden import Limits, Policy, Usage
from budgetwarden.usage import estimate_message_tokens, estimate_tokens, text_size

from .helpers import make_warden

CHINESE = "预算管理是确保智能体在限定成本内完成任务的关键机制。" * 40  # 1,040 characters
# LiteLLM's token counters give 640 (GPT-4o) and 920 (Claude) for these 1,040 characters
# (measured offline, once); by characters the estimate said 260, by bytes it says 780.


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("plain ascii", 11),
        ("", 0),
        ("café", 5),  # é is two bytes
        ("预算", 6),  # three bytes each
        ("emoji 🙂", 10),  # four bytes
    ],
)
def test_text_size_is_characters_for_ascii_and_bytes_beyond(text: str, size: int) -> None:
    assert text_size(text) == size


def test_a_chinese_prompt_is_estimated_near_its_tokens() -> None:
    assert estimate_tokens(CHINESE) == len(CHINESE.encode()) // 4 == 780
    message = {"role": "user", "content": CHINESE}
    assert estimate_message_tokens([message]) == 780 + 4


def test_ascii_text_is_estimated_as_before() -> None:
    english = "Agents must finish their tasks within budget. " * 20
    assert estimate_tokens(english) == -(-len(english) // 4)


def test_a_token_cap_holds_a_chinese_prompt_at_its_size() -> None:
    # 780 estimated tokens: a 500-token input cap refuses the call it let through at 260.
    warden, _, _ = make_warden(Policy(limits=Limits(max_input_tokens=500)))
    run = warden.run()
    with pytest.raises(Exception, match="max_input_tokens"):
        run.before_llm_call("gpt-4o", [{"role": "user", "content": CHINESE}], max_tokens=10)
    short = run.before_llm_call("gpt-4o", [{"role": "user", "content": "预算"}], max_tokens=10)
    run.after_llm_call(short, Usage(input_tokens=5, output_tokens=2))

"""Fixed texts for token-count benchmarks: English prose, Python code, JSON and Chinese prose,
2,400 characters each."""

from __future__ import annotations

import json

PROSE = (
    "Agents fail in expensive ways. A research agent that cannot find a source keeps "
    "searching, and every search sends the whole conversation back to the model, so the "
    "prompt grows with each step while the answer does not get any closer. A planner that "
    "receives malformed JSON asks again, and again, until a rate limit or a credit card "
    "stops it. Teams notice on the invoice, weeks later. The fix is not a better prompt but "
    "a budget that lives inside the loop: count the calls, price every token as the "
    "provider will bill it, reserve the worst case before each call and refuse the call "
    "that would cross the line. When a cap is near, move to a cheaper model or shrink the "
    "context; when it is reached, stop with an honest partial answer that says what was "
    "done and which limit ended the run. "
)

CODE = '''def search(query: str, *, limit: int = 10) -> list[dict[str, str]]:
    """Search the index and return the best matches, most relevant first."""
    hits = index.lookup(query.lower().strip())
    ranked = sorted(hits, key=lambda hit: (-hit.score, hit.title))
    return [{"title": h.title, "url": h.url, "snippet": h.snippet[:200]} for h in ranked[:limit]]


class Budget:
    def __init__(self, limit_usd: float) -> None:
        self.limit_usd = limit_usd
        self.spent_usd = 0.0

    def charge(self, amount: float) -> None:
        if self.spent_usd + amount > self.limit_usd:
            raise RuntimeError(f"over budget by {self.spent_usd + amount - self.limit_usd:.4f}")
        self.spent_usd += amount
'''

RECORD = {
    "id": "ticket-4812",
    "customer": {"name": "Acme Corp", "tier": "enterprise", "region": "eu-west-1"},
    "subject": "Invoice shows 3x expected LLM spend for March",
    "tags": ["billing", "llm", "urgent"],
    "events": [
        {"ts": "2025-03-02T10:15:00Z", "model": "gpt-4o", "tokens": 182344, "usd": 0.91},
        {"ts": "2025-03-02T10:16:10Z", "model": "gpt-4o", "tokens": 190002, "usd": 0.95},
    ],
}


#: Chinese prose (its full-width punctuation is the language's own).
CHINESE = (
    "智能体的失败往往代价高昂。一个找不到资料的研究智能体会不停地搜索，"  # noqa: RUF001
    "而每一次搜索都会把整段对话重新发给模型，"  # noqa: RUF001
    "于是提示越来越长，答案却没有更近一步。"  # noqa: RUF001
    "解决办法不是更好的提示词，而是放在循环里的预算："  # noqa: RUF001
    "统计每一次调用，按服务商的计费方式为每个令牌定价，"  # noqa: RUF001
    "在调用之前预留最坏情况，并拒绝会越界的那一次调用。"  # noqa: RUF001
)


def _fill(seed: str, chars: int) -> str:
    text = seed
    while len(text) < chars:
        text += seed
    return text[:chars]


def prose(chars: int = 2400) -> str:
    """English prose of exactly ``chars`` characters."""
    return _fill(PROSE, chars)


def code(chars: int = 2400) -> str:
    """Python source of exactly ``chars`` characters."""
    return _fill(CODE, chars)


def json_text(chars: int = 2400) -> str:
    """JSON records of exactly ``chars`` characters."""
    return _fill(json.dumps(RECORD, indent=1) + "\n", chars)


def chinese(chars: int = 2400) -> str:
    """Chinese prose of exactly ``chars`` characters (three UTF-8 bytes each)."""
    return _fill(CHINESE, chars)


def chat(text: str) -> list[dict[str, str]]:
    """A two-message chat whose user message is ``text``."""
    return [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": text},
    ]


SAMPLES = {
    "english prose": prose,
    "python code": code,
    "json": json_text,
    "chinese prose": chinese,
}

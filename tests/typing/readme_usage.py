"""User code as the README writes it, type-checked by ``make typecheck`` WITHOUT the pydantic
mypy plugin (``tests/typing/mypy.ini``): a field with a default must not look required to a
type checker that only reads ``dataclass_transform`` (``Field(default=...)``, not
``Field(None, ...)``), and ``Policy.prices`` takes a price's fields as a plain mapping."""

from __future__ import annotations

from budgetwarden import Budget, Limits, Policy, Routing, Thresholds, ToolRules, Usage
from budgetwarden.pricing import ModelPrice

limits = Limits(max_iterations=20, max_cost_usd=0.50, max_repeated_tool_calls=3)
final = Limits(final_answer=True)
budget = Budget(scope="user", window="8h", max_cost_usd=5.0)
vip = Budget(scope="user", window="8h", max_cost_usd=5.00, overrides={"vip": 20.00})
rpm = Budget(scope="user", window="1m", max_requests=30, name="rpm")
throttle = Budget(
    scope="key", window="1s", max_requests=5, when_exhausted="wait", max_wait_seconds=30
)
soft = Budget(scope="workspace", window="month", max_cost_usd=500.0, hard=False)
thresholds = Thresholds(stop=0.8)
routing = Routing(tiers=["gpt-4o-mini", "gpt-4o"], task_classes={"extraction": 0})
tools = ToolRules(deny=["shell"], max_calls={"web_search": 5}, price_usd={"web_search": 0.01})
usage = Usage(input_tokens=1000, output_tokens=100)
price = ModelPrice(input_cost_per_token=2e-7, output_cost_per_token=6e-7)
gpu = ModelPrice(gpu_usd_per_hour=2.5, tokens_per_second=900)

policy = Policy(
    limits=limits,
    budgets=[budget, vip, rpm, throttle, soft],
    thresholds=thresholds,
    routing=routing,
    tools=tools,
    on_exceeded="partial",
)
priced = Policy(prices={"my-llama": {"input_cost_per_token": 2e-7, "output_cost_per_token": 6e-7}})
gpu_priced = Policy(prices={"my-llama": {"gpu_usd_per_hour": 2.5, "tokens_per_second": 900}})
model_priced = Policy(prices={"my-llama": price, "my-gpu": gpu})
hints = Policy(budget_hints=True, record_content=False, ledger_failure="open")
empty = Policy()

"""The ``budgetwarden`` command: demo, price, and (with reports) report/dashboard/estimate."""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "main"]

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
app = typer.Typer(
    help="Keep LLM agents inside their budgets.", no_args_is_help=True, add_completion=False
)
console = Console()


@app.command()
def demo() -> None:
    """Run a runaway agent unguarded and guarded (offline), and show what each cost."""
    from .demo import run_demo

    with console.status("running the demo agents...") as status:
        rows = run_demo(progress=lambda name: status.update(f"running {name}..."))
    table = Table(title="budgetwarden demo: the same runaway agent, with and without a guard")
    for column in (
        "agent",
        "model calls",
        "tool calls",
        "input tok",
        "output tok",
        "cost $",
        "why it stopped",
    ):
        table.add_column(
            column, justify="left" if column in ("agent", "why it stopped") else "right"
        )
    for row in rows:
        table.add_row(
            str(row.get("agent", "")),
            str(row.get("model_calls", "")),
            str(row.get("tool_calls", "")),
            str(row.get("input_tokens", "")),
            str(row.get("output_tokens", "")),
            f"{row['cost_usd']:.4f}" if "cost_usd" in row else "",
            str(row.get("stop", "")),
        )
    console.print(table)


@app.command()
def price(model: str, input_tokens: int = 1000, output_tokens: int = 1000) -> None:
    """Show what a model costs per token and for a call of the given size."""
    from .pricing import PriceBook, UnknownModelError
    from .usage import Usage

    book = PriceBook()
    try:
        unit = book.price(model)
        cost = book.cost(model, Usage(input_tokens=input_tokens, output_tokens=output_tokens))
    except UnknownModelError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(
        f"{model}: ${unit.input_cost_per_token * 1e6:.4f} / M input tokens, "
        f"${unit.output_cost_per_token * 1e6:.4f} / M output tokens"
    )
    console.print(f"{input_tokens} in + {output_tokens} out = ${cost:.6f}")


def main() -> None:
    """Entry point of the ``budgetwarden`` console script."""
    app()

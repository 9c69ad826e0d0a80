"""What an LLM call costs, and from when a model may already know the market it is shown.

Prices are US dollars per million tokens (MTok): plain input, output, a 5-minute cache write
(1.25 × input) and a cache read (0.1 × input), as Anthropic lists them. Settings may override
or add models (``OCW_LLM_PRICES``). Training cutoffs decide when a backtest is contaminated:
a model tested on a period it was trained on has seen the answers.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from pydantic import Field

from trading.models import Model


class ModelPrice(Model):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float = Field(ge=0)
    cache_read: float = Field(ge=0)


class TokenUsage(Model):
    """Token counts of one Messages API answer (``usage``); ``input_tokens`` excludes cache."""

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)


def _price(inp: float, out: float) -> ModelPrice:
    return ModelPrice(
        input=inp, output=out, cache_write=round(inp * 1.25, 6), cache_read=round(inp * 0.1, 6)
    )


PRICES: dict[str, ModelPrice] = {
    "claude-sonnet-4-6": _price(3.0, 15.0),
    "claude-sonnet-4-5": _price(3.0, 15.0),
    "claude-sonnet-4-0": _price(3.0, 15.0),
    "claude-sonnet-4": _price(3.0, 15.0),
    "claude-opus-4-6": _price(5.0, 25.0),
    "claude-opus-4-5": _price(5.0, 25.0),
    "claude-opus-4-1": _price(15.0, 75.0),
    "claude-opus-4": _price(15.0, 75.0),
    "claude-haiku-4-5": _price(1.0, 5.0),
    "claude-3-5-haiku": _price(0.8, 4.0),
}

# Training data cutoffs (first day of the month given by Anthropic's model pages). A backtest
# whose market time lies before this date is flagged: the model may remember what came next.
TRAINING_CUTOFFS: dict[str, date] = {
    "claude-sonnet-4-6": date(2026, 1, 1),
    "claude-opus-4-6": date(2025, 8, 1),
    "claude-sonnet-4-5": date(2025, 7, 1),
    "claude-haiku-4-5": date(2025, 7, 1),
    "claude-opus-4-5": date(2025, 8, 1),
    "claude-opus-4-1": date(2025, 3, 1),
    "claude-opus-4": date(2025, 3, 1),
    "claude-sonnet-4": date(2025, 3, 1),
    "claude-3-5-haiku": date(2024, 7, 1),
}


def _lookup(model: str, table: dict[str, object]) -> object | None:
    """Exact id, else the longest table key the id starts with (dated ids, e.g. ``-20250929``)."""
    if model in table:
        return table[model]
    keys = [k for k in table if model.startswith(k)]
    return table[max(keys, key=len)] if keys else None


def price_for(model: str, overrides: dict[str, ModelPrice] | None = None) -> ModelPrice:
    """The model's prices; a model in neither table is an error (cost must never read 0)."""
    table: dict[str, object] = {**PRICES, **(overrides or {})}
    found = _lookup(model, table)
    if found is None:
        raise ValueError(
            f"no price for model {model!r}: add it to OCW_LLM_PRICES "
            '(JSON {"model": {"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3}})'
        )
    assert isinstance(found, ModelPrice)
    return found


def cost_usd(usage: TokenUsage, price: ModelPrice) -> float:
    """Dollar cost of one call."""
    return (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_creation_input_tokens * price.cache_write
        + usage.cache_read_input_tokens * price.cache_read
    ) / 1_000_000


def training_cutoff(model: str, overrides: dict[str, date] | None = None) -> date | None:
    found = _lookup(model, {**TRAINING_CUTOFFS, **(overrides or {})})
    assert found is None or isinstance(found, date)
    return found


def before_cutoff(
    model: str, market_time_ms: int, overrides: dict[str, date] | None = None
) -> bool:
    """True when the market moment lies before the model's training cutoff (unknown → False)."""
    cutoff = training_cutoff(model, overrides)
    if cutoff is None:
        return False
    return datetime.fromtimestamp(market_time_ms / 1000, tz=UTC).date() < cutoff

"""What the cloud costs: tokens in/out per model, a price table, and the budget cap.

Prices are US dollars per million tokens (input, output). The built-in table holds a few
public list prices at the time of writing — they change, so a shop sets its own with
`--price IN,OUT` or `ENDCLOUD_CLOUD_PRICE="IN,OUT"` (or a JSON file of {model: [in, out]}
in `ENDCLOUD_CLOUD_PRICES`). A budget needs a known price: an unknown model with a budget
is a configuration error, not a silent $0.

The cap is checked before each request with that request's prompt cost reserved, so
concurrent requests cannot all slip under it at once; the overshoot is at most the
replies of the requests already in flight.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endcloud.errors import BudgetExceeded, ConfigError
from endcloud.records import Usage

ENV_PRICE = "ENDCLOUD_CLOUD_PRICE"
ENV_PRICES = "ENDCLOUD_CLOUD_PRICES"

# USD per 1M tokens (input, output); list prices, short-context tier, as published.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gemini-1.5-pro": (1.25, 5.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-2.0-flash": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "deepseek-chat": (0.27, 1.10),
    "qwen-plus": (0.40, 1.20),
    "qwen-max": (1.60, 6.40),
}


def parse_price(text: str, *, source: str = "--price") -> tuple[float, float]:
    """'1.25,5' -> (1.25, 5.0); errors name where the value came from."""
    try:
        a, b = (float(x) for x in str(text).split(","))
    except ValueError:
        raise ConfigError(f"{source} must be 'IN,OUT' dollars per million tokens, got {text!r}") from None
    if a < 0 or b < 0:
        raise ConfigError(f"{source} prices must be >= 0, got {text!r}")
    return a, b


@dataclass
class PriceTable:
    """Model name -> (USD per 1M input tokens, USD per 1M output tokens)."""

    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    @classmethod
    def from_env(cls) -> "PriceTable":
        table = cls()
        path = os.environ.get(ENV_PRICES)
        if path:
            try:
                data = json.loads(Path(path).read_text(encoding="utf-8"))
                table.prices.update({k: (float(v[0]), float(v[1])) for k, v in data.items()})
            except (OSError, ValueError, TypeError, IndexError, AttributeError) as e:
                raise ConfigError(f"{ENV_PRICES}={path!r} must be a JSON file of {{model: [in, out]}}: {e}") from None
        return table

    def lookup(self, model: str) -> tuple[float, float] | None:
        if model in self.prices:
            return self.prices[model]
        # "gemini-1.5-pro-002", "models/gemini-1.5-pro" -> the longest known name inside
        hits = [k for k in self.prices if k in model]
        return self.prices[max(hits, key=len)] if hits else None

    def cost(self, model: str, usage: Usage) -> float:
        p = self.lookup(model)
        if p is None:
            return 0.0
        return (usage.prompt_tokens * p[0] + usage.completion_tokens * p[1]) / 1e6


class CostLedger:
    """Running totals per model and the optional budget cap (thread-safe)."""

    def __init__(self, *, prices: PriceTable | None = None, budget: float | None = None):
        if budget is not None and budget < 0:
            raise ConfigError(f"--budget must be >= 0 dollars, got {budget!r}")
        self.prices = prices or PriceTable()
        self.budget = budget
        self._lock = threading.Lock()
        self._reserved = 0.0
        self.by_model: dict[str, dict[str, float]] = {}

    def check_priced(self, model: str) -> None:
        if self.budget is not None and self.prices.lookup(model) is None:
            raise ConfigError(
                f"a budget is set but model {model!r} has no price; set --price IN,OUT (or {ENV_PRICE}) "
                "in dollars per million tokens"
            )

    @property
    def spent(self) -> float:
        with self._lock:
            return sum(m["cost"] for m in self.by_model.values())

    def reserve(self, model: str, prompt_tokens: int) -> float:
        """Before a request: raise BudgetExceeded if this prompt would pass the cap."""
        est = self.prices.cost(model, Usage(prompt_tokens, 0))
        with self._lock:
            spent = sum(m["cost"] for m in self.by_model.values())
            if self.budget is not None and spent + self._reserved + est > self.budget:
                raise BudgetExceeded(
                    f"budget cap ${self.budget:.4f} reached (spent ${spent:.4f}, "
                    f"${self._reserved:.4f} in flight, next request ~${est:.4f})"
                )
            self._reserved += est
        return est

    def release(self, reserved: float) -> None:
        with self._lock:
            self._reserved = max(0.0, self._reserved - reserved)

    def record(self, model: str, usage: Usage) -> float:
        cost = self.prices.cost(model, usage)
        with self._lock:
            m = self.by_model.setdefault(model, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0})
            m["requests"] += 1
            m["prompt_tokens"] += usage.prompt_tokens
            m["completion_tokens"] += usage.completion_tokens
            m["cost"] += cost
        return cost

    def totals(self) -> dict[str, Any]:
        with self._lock:
            models = {k: dict(v) for k, v in self.by_model.items()}
        return {
            "prompt_tokens": int(sum(m["prompt_tokens"] for m in models.values())),
            "completion_tokens": int(sum(m["completion_tokens"] for m in models.values())),
            "cost": sum(m["cost"] for m in models.values()),
            "budget": self.budget,
            "models": models,
        }

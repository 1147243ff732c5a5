"""The teacher price table: USD per million input and output tokens, per model.

Read from ``teacher_prices.yaml`` at the repository root, or the file named by ``DISTILL_TEACHER_PRICES``.
It feeds cost estimates, run accounting and the budget cap only; it is not a DVC dependency of any stage,
so a price change never invalidates synthesized data (stats written before it keep the old figure).
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = REPO_ROOT / "teacher_prices.yaml"


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float

    def cost(self, tokens_in: float, tokens_out: float) -> float:
        """USD for these token counts."""
        return (tokens_in * self.input + tokens_out * self.output) / 1e6


class PriceTable:
    """Prices per model; `get` returns None for a model the table does not list."""

    def __init__(self, prices: Mapping[str, Price], batch_discount: float = 0.5, source: str = ""):
        self.prices = dict(prices)
        self.batch_discount = batch_discount
        self.source = source

    @classmethod
    def load(cls, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> "PriceTable":
        """Load the table (a missing default file gives an empty table; a missing named file is an error)."""
        env = os.environ if env is None else env
        named = path or env.get("DISTILL_TEACHER_PRICES")
        file = Path(named) if named else DEFAULT_PATH
        if not file.is_file():
            if named:
                raise FileNotFoundError(f"teacher price table {file} (DISTILL_TEACHER_PRICES) does not exist")
            return cls({}, source="(none)")
        data = yaml.safe_load(file.read_text()) or {}
        try:
            prices = {
                str(model): Price(float(p["input"]), float(p["output"]))
                for model, p in (data.get("models") or {}).items()
            }
            discount = float(data.get("batch_discount", 0.5))
        except (KeyError, TypeError, ValueError) as exc:
            message = f"{file}: each model needs numeric 'input' and 'output' prices ({exc})"
            raise ValueError(message) from None
        return cls(prices, discount, str(file))

    def get(self, model: str) -> Price | None:
        """The price of `model`, or None when unknown."""
        return self.prices.get(model)

"""What tokens cost: prices per million tokens, as the settings give them, applied to a call's usage.

There is no built-in price list: a fine-tuned model's price is the account's to state (``ARCANOS_PRICE_*``), and a
cost is ``None`` rather than a guess when no price is set.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Pricing"]

MILLION = 1_000_000


class Pricing(BaseModel):
    """Prices in USD per million tokens: input, cached input (defaults to the input price) and output.

    Output tokens include the reasoning tokens (they are billed as output); input tokens include the cached ones,
    which are billed at the cached price.

    Examples:
        >>> pricing = Pricing(input_per_mtok=1.25, cached_input_per_mtok=0.125, output_per_mtok=10)
        >>> pricing.cost(input_tokens=1_000_000, cached_tokens=200_000, output_tokens=50_000)
        1.525
    """

    model_config = ConfigDict(frozen=True)

    input_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float = Field(ge=0)

    def cost(self, *, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """The cost in USD of these tokens (rounded to 1e-10 USD, which only drops float noise)."""
        cached = min(max(cached_tokens, 0), input_tokens)
        cached_price = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        dollars = (
            (input_tokens - cached) * self.input_per_mtok + cached * cached_price + output_tokens * self.output_per_mtok
        ) / MILLION
        return round(dollars, 10)

"""Which tickers the pipeline fetches."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator

from stock_assets.defs.universe.constituents import resolve_tickers, validate_symbol


def bundled_sample_tickers() -> list[str]:
    from stock_assets.defs.quotes.archive import PriceArchive

    return list(PriceArchive.bundled().symbols)


class TickerSelection(dg.ConfigurableResource):
    """The symbols the pipeline fetches; empty means the tickers the bundled price sample covers.

    Every symbol is validated when the resource is configured: a malformed symbol or one outside
    the S&P 500 constituents list fails with a message that names it.
    """

    tickers: list[str] = Field(
        default_factory=list,
        description="Yahoo symbols to fetch (e.g. AAPL, BRK-B); empty = the bundled sample's 58 tickers.",
    )

    @field_validator("tickers")
    @classmethod
    def _symbols_are_well_formed(cls, value: list[str]) -> list[str]:
        return [validate_symbol(symbol) for symbol in value]

    def symbols(self) -> list[str]:
        return resolve_tickers(self.tickers, default=bundled_sample_tickers())

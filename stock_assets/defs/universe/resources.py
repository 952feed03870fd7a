"""Which tickers the pipeline fetches."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator

from stock_assets.defs.universe.constituents import resolve_tickers, validate_listing


def bundled_sample_tickers() -> list[str]:
    """The tickers of the replay archive: the bundled sample's, or STOCK_ASSETS_REPLAY_ARCHIVE's."""
    from stock_assets.yahoo.archive import PriceArchive

    return list(PriceArchive.configured().symbols)


class TickerSelection(dg.ConfigurableResource):
    """The symbols the pipeline fetches; empty means the tickers the bundled price sample covers.

    Any Yahoo symbol of a known exchange is accepted, S&P 500 member or not (AAPL, QQQ, OCDO.L,
    4063.T), spelled as Yahoo spells it. Every symbol is validated when the resource is configured:
    a malformed symbol or an unknown exchange suffix fails with a message that names it.
    """

    tickers: list[str] = Field(
        default_factory=list,
        description="Yahoo symbols to fetch (e.g. AAPL, BRK-B, QQQ, OCDO.L, 4063.T); empty = the replay "
        "archive's tickers (the bundled sample's 58).",
    )

    @field_validator("tickers")
    @classmethod
    def _symbols_are_well_formed(cls, value: list[str]) -> list[str]:
        return [validate_listing(symbol) for symbol in value]

    def symbols(self) -> list[str]:
        return resolve_tickers(self.tickers, default=bundled_sample_tickers())

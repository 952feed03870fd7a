"""Which tickers the pipeline fetches."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import dagster as dg
from pydantic import Field, field_validator

from stock_assets.defs.universe.constituents import resolve_tickers, validate_listing


def bundled_sample_tickers() -> list[str]:
    """The tickers of the replay archive: the bundled sample's, or STOCK_ASSETS_REPLAY_ARCHIVE's."""
    from stock_assets.yahoo.archive import PriceArchive

    return list(PriceArchive.configured().symbols)


@lru_cache(maxsize=1)
def _stints() -> dict[str, tuple[tuple[dt.date, dt.date], ...]]:
    """Each symbol's S&P 500 membership stints [valid_from, valid_to) (the bundled history)."""
    from stock_assets.defs.universe.history import POSITIVE_INFINITY, membership_intervals

    stints: dict[str, list[tuple[dt.date, dt.date]]] = {}
    for row in membership_intervals().itertuples():
        stints.setdefault(row.symbol, []).append((row.valid_from, row.valid_to or POSITIVE_INFINITY))
    return {symbol: tuple(sorted(spans)) for symbol, spans in stints.items()}


def members_between(start: dt.date, end: dt.date) -> list[str]:
    """Symbols that were S&P 500 members on some day of [start, end)."""
    return sorted(symbol for symbol, spans in _stints().items()
                  if any(first < end and start < last for first, last in spans))


class TickerSelection(dg.ConfigurableResource):
    """The symbols the pipeline fetches; empty means the tickers the bundled price sample covers.

    Any Yahoo symbol of a known exchange is accepted, S&P 500 member or not (AAPL, QQQ, OCDO.L,
    4063.T), spelled as Yahoo spells it. Every symbol is validated when the resource is configured:
    a malformed symbol or an unknown exchange suffix fails with a message that names it.

    With `sp500_point_in_time`, a run also fetches every ticker that was an S&P 500 member on some
    day of its partitions (`stock_assets/data/sp500_membership_intervals.csv`), for its member days
    only: a survivorship-free history (README "Survivorship"). Members Yahoo does not serve
    (delisted) are reported, not errors.
    """

    tickers: list[str] = Field(
        default_factory=list,
        description="Yahoo symbols to fetch (e.g. AAPL, BRK-B, QQQ, OCDO.L, 4063.T); empty = the replay "
        "archive's tickers (the bundled sample's 58), or none besides the index members with sp500_point_in_time.",
    )
    sp500_point_in_time: bool = Field(
        default=False,
        description="Also fetch every S&P 500 member of a partition's days, on its member days only "
        "(past members included: no survivorship bias); members Yahoo no longer serves are reported.",
    )

    @field_validator("tickers")
    @classmethod
    def _symbols_are_well_formed(cls, value: list[str]) -> list[str]:
        return [validate_listing(symbol) for symbol in value]

    def configured(self) -> list[str]:
        """The symbols named by `tickers` (or, when none and not point in time, the archive's)."""
        default = [] if self.sp500_point_in_time else bundled_sample_tickers()
        return resolve_tickers(self.tickers, default=default)

    def symbols(self) -> list[str]:
        """Every symbol the pipeline may fetch: the configured ones, and with `sp500_point_in_time`
        every S&P 500 member of the partitions' history."""
        if not self.sp500_point_in_time:
            return self.configured()
        from stock_assets.defs.partitions import FIRST_DAY

        return sorted(set(self.configured()) | set(members_between(dt.date.fromisoformat(FIRST_DAY), dt.date.max)))

    def symbols_between(self, start: dt.date, end: dt.date) -> list[str]:
        """The symbols a run over the days [start, end) fetches."""
        if not self.sp500_point_in_time:
            return self.configured()
        return sorted(set(self.configured()) | set(members_between(start, end)))

    def index_only(self, symbols: Iterable[str]) -> set[str]:
        """Those of `symbols` fetched only as index members (not configured): owed on member days
        only, and not served by Yahoo when a run got no bar of them at all."""
        if not self.sp500_point_in_time:
            return set()
        configured, stints = set(self.configured()), _stints()
        return {symbol for symbol in symbols if symbol not in configured and symbol in stints}

    def member_sessions(self, sessions: Mapping[str, Sequence[dt.date]]) -> dict[str, Sequence[dt.date]]:
        """Each symbol's `sessions` (its exchange's), cut to its member days when it is fetched as an
        index member only; a symbol that was a member on all of them keeps the same sequence."""
        index_only, stints = self.index_only(sessions), _stints()
        result: dict[str, Sequence[dt.date]] = {}
        for symbol, days in sessions.items():
            if symbol not in index_only or not days:
                result[symbol] = days
                continue
            spans = stints[symbol]
            if any(first <= days[0] and days[-1] < last for first, last in spans):
                result[symbol] = days
            else:
                result[symbol] = [day for day in days if any(first <= day < last for first, last in spans)]
        return result

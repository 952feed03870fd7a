"""The ticker universe: symbol rules, configuration errors, and the reference-table upsert."""

from __future__ import annotations

import dagster as dg
import pytest
from pydantic import ValidationError
from sqlalchemy import text

from stock_assets.defs.universe.assets import ticker_universe
from stock_assets.defs.universe.constituents import (
    InvalidSymbolError,
    load_constituents,
    resolve_tickers,
    validate_symbol,
)
from stock_assets.defs.universe.resources import TickerSelection


def test_constituents_use_yahoo_spelling():
    frame = load_constituents()
    symbols = set(frame["symbol"])
    assert len(frame) == 503
    assert {"BRK-B", "BF-B"} <= symbols
    assert not any("." in s for s in symbols)
    brk = frame.set_index("symbol").loc["BRK-B"]
    assert brk["listed_symbol"] == "BRK.B"
    assert brk["sector"] == "Financials"
    assert frame["sector"].nunique() == 11


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "AAPL'; DROP TABLE prices;--", "A" * 10_000, "ＡＡＰＬ", "AAPL MSFT", "$AAPL", None, 42],
)
def test_malformed_symbols_are_rejected_with_a_clear_error(bad):
    with pytest.raises(InvalidSymbolError) as raised:
        validate_symbol(bad)
    assert str(raised.value)  # the message says what is wrong
    assert len(str(raised.value)) < 300  # and never echoes a huge input back


def test_validate_symbol_takes_yahoo_spelling_as_it_is():
    assert validate_symbol(" brk-b ") == "BRK-B"
    assert validate_symbol("AAPL") == "AAPL"
    # A dot is Yahoo's exchange suffix: never rewritten to a dash.
    assert validate_symbol("ocdo.l") == "OCDO.L"
    assert validate_symbol("WSU.DE") == "WSU.DE"
    assert validate_symbol("4063.T") == "4063.T"
    assert validate_symbol("BT-A.L") == "BT-A.L"


def test_resolve_tickers_takes_any_listing_of_a_known_exchange():
    assert resolve_tickers(None, default=["MSFT", "AAPL"]) == ["AAPL", "MSFT"]
    # Not S&P 500 members: an ETF, a US listing, London, Xetra and Tokyo listings.
    assert resolve_tickers(["msft", "QQQ", "SPOT", "OCDO.L", "WSU.DE", "4063.T", "MSFT"], default=[]) == [
        "4063.T", "MSFT", "OCDO.L", "QQQ", "SPOT", "WSU.DE"]
    # The constituents list's spelling is not Yahoo's: the error says how Yahoo spells it.
    with pytest.raises(InvalidSymbolError, match=r"BRK\.B: unknown exchange suffix '\.B' \(Yahoo spells the share "
                                                 r"class BRK-B\)"):
        resolve_tickers(["AAPL", "BRK.B"], default=[])
    with pytest.raises(InvalidSymbolError, match=r"ZZZZ\.XX: unknown exchange suffix"):
        resolve_tickers(["AAPL", "ZZZZ.XX"], default=[])


def test_ticker_selection_rejects_a_bad_symbol_at_configuration():
    with pytest.raises(ValidationError, match="Malformed ticker symbol"):
        TickerSelection(tickers=["AAPL", "DROP TABLE"])


def test_default_selection_is_the_bundled_sample():
    symbols = TickerSelection().symbols()
    assert len(symbols) == 58
    assert {"AAPL", "PFE", "NEE", "O"} <= set(symbols)


def test_ticker_universe_upserts_idempotently(database):
    resources = {"database": database, "tickers": TickerSelection(tickers=["AAPL", "MSFT", "BRK-B"])}
    first = dg.materialize([ticker_universe], resources=resources)
    assert first.success
    with database.begin() as conn:
        before = conn.execute(text("SELECT symbol, sector, tracked, updated_at FROM market.ticker_universe "
                                   "ORDER BY symbol")).all()
    assert len(before) == 503
    assert {row.symbol for row in before if row.tracked} == {"AAPL", "MSFT", "BRK-B"}

    assert dg.materialize([ticker_universe], resources=resources).success
    with database.begin() as conn:
        after = conn.execute(text("SELECT symbol, sector, tracked, updated_at FROM market.ticker_universe "
                                  "ORDER BY symbol")).all()
    assert after == before  # unchanged rows are not even touched (updated_at stays)

    resources["tickers"] = TickerSelection(tickers=["AAPL"])
    assert dg.materialize([ticker_universe], resources=resources).success
    with database.begin() as conn:
        tracked = conn.execute(text("SELECT symbol FROM market.ticker_universe WHERE tracked")).scalars().all()
    assert tracked == ["AAPL"]


def test_ticker_selection_refuses_an_unknown_exchange_at_configuration():
    with pytest.raises(ValidationError, match=r"ABC\.XX: unknown exchange suffix"):
        TickerSelection(tickers=["OCDO.L", "ABC.XX"])
    assert TickerSelection(tickers=["ocdo.l", "4063.T"]).tickers == ["OCDO.L", "4063.T"]

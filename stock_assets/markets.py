"""Markets: which exchange a Yahoo symbol trades on, its trading calendar, time zone and currency.

Yahoo spells a listing's exchange as a suffix: `OCDO.L` is Ocado on the London Stock Exchange,
`WSU.DE` is on Xetra, `4063.T` on the Tokyo Stock Exchange; a symbol without a suffix (AAPL,
BRK-B, QQQ) is a US listing. The suffix alone says which trading calendar decides the listing's
sessions (`exchange_calendars` codes: XNYS, XLON, XETR, XTKS, ...), so the pipeline knows, before
it asks Yahoo, on which days a listing must have a bar.

Yahoo's chart answer confirms the rest (`exchangeName`, `exchangeTimezoneName`, `currency`,
`instrumentType`); those are stored per listing in `market.listings` (sql/020_listings.sql).

Currencies: Yahoo quotes some listings in minor units, e.g. London in pence (`GBp`, also `GBX`),
Johannesburg in cents (`ZAc`), Tel Aviv in agorot (`ILA`). 100 minor = 1 major. Cleaned prices are
in major units (`MINOR_UNITS` maps each minor code to its major currency).

To support another exchange, add a row to `EXCHANGES` (suffix, calendar, Yahoo's exchange code,
time zone, usual currency). Tel Aviv (`.TA`, XTAE) is left out: exchange_calendars 4.13 cannot build
that calendar (its special closes fall on days it does not count as sessions).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import exchange_calendars
import pandas as pd


@dataclass(frozen=True)
class Exchange:
    suffix: str  # Yahoo's symbol suffix, "" for US listings
    calendar: str  # exchange_calendars code
    yahoo_code: str  # Yahoo's `exchangeName` for the main board
    name: str
    timezone: str  # IANA zone of the exchange (Yahoo's `exchangeTimezoneName`)
    currency: str  # the usual quote currency, as Yahoo spells it (GBp = pence)
    opens: dt.time  # regular session open, local time (where Yahoo stamps daily bars)


EXCHANGES: tuple[Exchange, ...] = (
    Exchange("", "XNYS", "NYQ", "NYSE / Nasdaq (US)", "America/New_York", "USD", dt.time(9, 30)),
    Exchange(".L", "XLON", "LSE", "London Stock Exchange", "Europe/London", "GBp", dt.time(8)),
    Exchange(".IL", "XLON", "IOB", "London International Order Book", "Europe/London", "USD", dt.time(8)),
    Exchange(".DE", "XETR", "GER", "Xetra", "Europe/Berlin", "EUR", dt.time(9)),
    Exchange(".F", "XFRA", "FRA", "Frankfurt", "Europe/Berlin", "EUR", dt.time(8)),
    Exchange(".PA", "XPAR", "PAR", "Euronext Paris", "Europe/Paris", "EUR", dt.time(9)),
    Exchange(".AS", "XAMS", "AMS", "Euronext Amsterdam", "Europe/Amsterdam", "EUR", dt.time(9)),
    Exchange(".BR", "XBRU", "BRU", "Euronext Brussels", "Europe/Brussels", "EUR", dt.time(9)),
    Exchange(".LS", "XLIS", "LIS", "Euronext Lisbon", "Europe/Lisbon", "EUR", dt.time(8)),
    Exchange(".MI", "XMIL", "MIL", "Borsa Italiana", "Europe/Rome", "EUR", dt.time(9)),
    Exchange(".MC", "XMAD", "MCE", "Bolsa de Madrid", "Europe/Madrid", "EUR", dt.time(9)),
    Exchange(".SW", "XSWX", "EBS", "SIX Swiss Exchange", "Europe/Zurich", "CHF", dt.time(9)),
    Exchange(".ST", "XSTO", "STO", "Nasdaq Stockholm", "Europe/Stockholm", "SEK", dt.time(9)),
    Exchange(".CO", "XCSE", "CPH", "Nasdaq Copenhagen", "Europe/Copenhagen", "DKK", dt.time(9)),
    Exchange(".HE", "XHEL", "HEL", "Nasdaq Helsinki", "Europe/Helsinki", "EUR", dt.time(10)),
    Exchange(".OL", "XOSL", "OSL", "Oslo Bors", "Europe/Oslo", "NOK", dt.time(9)),
    Exchange(".VI", "XWBO", "VIE", "Wiener Borse", "Europe/Vienna", "EUR", dt.time(9)),
    Exchange(".IR", "XDUB", "ISE", "Euronext Dublin", "Europe/Dublin", "EUR", dt.time(8)),
    Exchange(".WA", "XWAR", "WSE", "Warsaw Stock Exchange", "Europe/Warsaw", "PLN", dt.time(9)),
    Exchange(".IS", "XIST", "IST", "Borsa Istanbul", "Europe/Istanbul", "TRY", dt.time(10)),
    Exchange(".T", "XTKS", "JPX", "Tokyo Stock Exchange", "Asia/Tokyo", "JPY", dt.time(9)),
    Exchange(".HK", "XHKG", "HKG", "Hong Kong Stock Exchange", "Asia/Hong_Kong", "HKD", dt.time(9, 30)),
    Exchange(".SS", "XSHG", "SHH", "Shanghai Stock Exchange", "Asia/Shanghai", "CNY", dt.time(9, 30)),
    Exchange(".SZ", "XSHG", "SHZ", "Shenzhen Stock Exchange", "Asia/Shanghai", "CNY", dt.time(9, 30)),
    Exchange(".KS", "XKRX", "KSC", "Korea Exchange", "Asia/Seoul", "KRW", dt.time(9)),
    Exchange(".TW", "XTAI", "TAI", "Taiwan Stock Exchange", "Asia/Taipei", "TWD", dt.time(9)),
    Exchange(".SI", "XSES", "SES", "Singapore Exchange", "Asia/Singapore", "SGD", dt.time(9)),
    Exchange(".NS", "XBOM", "NSI", "National Stock Exchange of India", "Asia/Kolkata", "INR", dt.time(9, 15)),
    Exchange(".BO", "XBOM", "BSE", "BSE (Bombay)", "Asia/Kolkata", "INR", dt.time(9, 15)),
    Exchange(".AX", "XASX", "ASX", "Australian Securities Exchange", "Australia/Sydney", "AUD", dt.time(10)),
    Exchange(".NZ", "XNZE", "NZE", "NZX", "Pacific/Auckland", "NZD", dt.time(10)),
    Exchange(".TO", "XTSE", "TOR", "Toronto Stock Exchange", "America/Toronto", "CAD", dt.time(9, 30)),
    Exchange(".SA", "BVMF", "SAO", "B3 (Sao Paulo)", "America/Sao_Paulo", "BRL", dt.time(10)),
    Exchange(".MX", "XMEX", "MEX", "Bolsa Mexicana", "America/Mexico_City", "MXN", dt.time(8, 30)),
    Exchange(".JO", "XJSE", "JNB", "Johannesburg Stock Exchange", "Africa/Johannesburg", "ZAc", dt.time(9)),
)
_BY_SUFFIX = {exchange.suffix: exchange for exchange in EXCHANGES}

# Yahoo's minor-unit currency codes: (major currency, minor units per major unit).
MINOR_UNITS: dict[str, tuple[str, int]] = {
    "GBp": ("GBP", 100),
    "GBX": ("GBP", 100),
    "ZAc": ("ZAR", 100),
    "ZAC": ("ZAR", 100),
    "ILA": ("ILS", 100),
}


class UnknownExchangeError(ValueError):
    """A symbol whose suffix names no exchange this project knows the calendar of."""


def suffix_of(symbol: str) -> str:
    """Yahoo's exchange suffix of `symbol` (".L" for OCDO.L), "" for a US listing."""
    base, dot, suffix = symbol.rpartition(".")
    return f".{suffix}" if dot and base else ""


def exchange_of(symbol: str) -> Exchange:
    """The exchange `symbol` trades on, from its suffix; UnknownExchangeError for an unknown suffix."""
    suffix = suffix_of(symbol)
    try:
        return _BY_SUFFIX[suffix]
    except KeyError:
        known = ", ".join(e.suffix for e in EXCHANGES if e.suffix)
        hint = f" (Yahoo spells the share class {symbol.replace('.', '-')})" if len(suffix) == 2 else ""
        raise UnknownExchangeError(
            f"{symbol}: unknown exchange suffix {suffix!r}{hint}; known suffixes: none (US), {known} "
            "(stock_assets/markets.py EXCHANGES)"
        ) from None


def major_units(currency: str | None) -> tuple[str | None, int]:
    """(major currency, divisor): ('GBP', 100) for 'GBp', (currency, 1) for a major currency."""
    if currency is None:
        return None, 1
    return MINOR_UNITS.get(currency, (currency, 1))


# -- calendars ---------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _calendar(code: str) -> exchange_calendars.ExchangeCalendar:
    """The calendar from the earlier of the configured first day and 2010 (or the calendar's own
    earliest date, e.g. 1997 for Tokyo)."""
    from stock_assets import settings

    first = pd.Timestamp(min(dt.date.fromisoformat(settings.first_day()), dt.date(2010, 1, 1)).replace(month=1, day=1))
    try:  # a calendar costs a few tenths of a second to build: build it once if it reaches that far
        return exchange_calendars.get_calendar(code, start=first)
    except ValueError:  # it does not: from its earliest date
        bound = type(exchange_calendars.get_calendar(code)).bound_min()
        if bound is None:
            raise
        return exchange_calendars.get_calendar(code, start=max(first, bound))


def sessions(code: str, start: dt.date, end: dt.date) -> list[dt.date]:
    """Sessions of calendar `code` with start <= day < end.

    Before the calendar's earliest date (Tokyo's is 1997) every weekday counts as a session: the
    exchange's holidays are not known that far back."""
    if end <= start:
        return []
    calendar = _calendar(code)
    first_known = calendar.first_session.date()
    before = [day.date() for day in pd.bdate_range(start, min(end, first_known) - dt.timedelta(days=1))]
    first = max(start, first_known)
    last = min(end - dt.timedelta(days=1), calendar.last_session.date())
    if last < first:
        return before
    return before + [ts.date() for ts in calendar.sessions_in_range(pd.Timestamp(first), pd.Timestamp(last))]


def is_session(code: str, day: dt.date) -> bool:
    return bool(sessions(code, day, day + dt.timedelta(days=1)))


def sessions_by_symbol(symbols: list[str], start: dt.date, end: dt.date) -> dict[str, list[dt.date]]:
    """Each symbol's own sessions in [start, end), from its exchange's calendar."""
    by_calendar: dict[str, list[dt.date]] = {}
    result = {}
    for symbol in symbols:
        code = exchange_of(symbol).calendar
        if code not in by_calendar:
            by_calendar[code] = sessions(code, start, end)
        result[symbol] = by_calendar[code]
    return result

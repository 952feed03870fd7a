"""The user's sector history file (`STOCK_ASSETS_SECTOR_HISTORY`): every malformed file is refused
with the file, the line and the problem; a good one is merged with the stated precedence."""

from __future__ import annotations

import datetime as dt
import re

import dagster as dg
import pytest
from sqlalchemy import text

from stock_assets import settings
from stock_assets.defs.universe.assets import ticker_universe
from stock_assets.defs.universe.constituents import load_constituents
from stock_assets.defs.universe.history import POSITIVE_INFINITY, classification_intervals, gics_changes
from stock_assets.defs.universe.history_assets import index_membership, sector_classification
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.universe.sector_history import (
    USER_SOURCE,
    SectorHistoryError,
    merge_sector_history,
    read_sector_history,
)

HEADER = "symbol,sector,valid_from,valid_to\n"


def _bundled():
    return classification_intervals(load_constituents()[["symbol", "sector"]]), set(gics_changes()["symbol"])


def _merge(path):
    bundled, dated = _bundled()
    return merge_sector_history(bundled, read_sector_history(path), dated)


# (what is wrong, file body after the header, the line named, words of the message)
MALFORMED = [
    ("unknown sector", "AABA,Information Technology,1999-12-08,2017-06-19\nXL,Tech Stuff,2010-01-04,2019-06-10\n",
     3, "unknown GICS sector 'Tech Stuff'"),
    ("bad valid_from", "AABA,Information Technology,12/08/1999,2017-06-19\n", 2,
     "valid_from '12/08/1999' is not a date"),
    ("bad valid_to", "AABA,Information Technology,1999-12-08,2017-13-01\n", 2, "valid_to '2017-13-01' is not a date"),
    ("empty valid_from", "AABA,Information Technology,,2017-06-19\n", 2, "valid_from is empty"),
    ("valid_to not after valid_from", "AABA,Information Technology,2017-06-19,2017-06-19\n", 2,
     "valid_to 2017-06-19 is not after valid_from 2017-06-19"),
    ("overlapping periods", "XL,Financials,2008-01-02,2012-01-01\nAABA,Information Technology,1999-12-08,2017-06-19\n"
     "XL,Industrials,2011-06-01,2019-06-10\n", 4, "XL's period from 2011-06-01 overlaps its period of line 2"),
    ("malformed symbol", "AA BA,Information Technology,1999-12-08,2017-06-19\n", 2, "Malformed ticker symbol"),
    ("sector that did not exist then", "GGP,Real Estate,2010-01-04,2018-08-28\n", 2,
     "'Real Estate' existed only from 2016-09-01"),
    ("overlaps a dated GICS change", "GOOGL,Information Technology,2010-01-04,2019-01-02\n", 2,
     "overlaps the bundled classification from its dated GICS change of 2018-09-24"),
    ("open period of a current member", "AAPL,Industrials,2000-01-03,\n", 2,
     "AAPL is in today's constituents list as Information Technology"),
    ("too many fields", "AABA,Information Technology,1999-12-08,2017-06-19,x,y\n", 2, "6 fields for 4 columns"),
]


@pytest.mark.parametrize("body, line, message", [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_a_malformed_file_is_refused_naming_file_line_and_problem(tmp_path, body, line, message):
    path = tmp_path / "sectors.csv"
    path.write_text(HEADER + body)
    with pytest.raises(SectorHistoryError) as caught:
        _merge(path)
    told = str(caught.value)
    assert told.startswith(f"{path}, line {line}: "), told
    assert message in told


@pytest.mark.parametrize("content, message", [
    ("ticker,gics,from\nAABA,Information Technology,1999-12-08\n", "line 1: the header lacks the column(s) symbol, "
                                                                   "sector, valid_from"),
    ("# only a comment\n", "empty file"),
], ids=["missing columns", "empty"])
def test_a_file_without_the_columns_is_refused(tmp_path, content, message):
    path = tmp_path / "sectors.csv"
    path.write_text(content)
    with pytest.raises(SectorHistoryError, match=re.escape(message)):
        read_sector_history(path)


def test_a_missing_file_is_named(tmp_path):
    told = f"{tmp_path / 'nope.csv'}: cannot read the sector history file"
    with pytest.raises(SectorHistoryError, match=re.escape(told)):
        read_sector_history(tmp_path / "nope.csv")


def test_precedence_unknown_symbols_added_assumptions_replaced_facts_kept(tmp_path):
    path = tmp_path / "sectors.csv"
    path.write_text("# past members, index spelling accepted\n" + HEADER.replace("\n", ",note\n")
                    + "AABA,information technology,1999-12-08,2017-06-19,Altaba\n"
                    + "BRK.B,Industrials,2000-01-03,2001-01-02,a made-up correction\n"
                    + "GOOGL,Industrials,2010-01-04,2012-01-03,before its 2018 change\n")
    merged, report = _merge(path)
    assert report.symbols_added == ["AABA"]
    assert report.periods_added == 3 and report.periods_replacing_assumptions == 2

    def sector(symbol, day):
        hits = merged[(merged["symbol"] == symbol) & (merged["valid_from"] <= day) & (merged["valid_to"] > day)]
        assert len(hits) == 1, (symbol, day, hits)
        return hits.iloc[0]["sector"], hits.iloc[0]["source"]

    assert sector("AABA", dt.date(2017, 6, 16)) == ("Information Technology", USER_SOURCE)
    assert merged[merged["symbol"] == "AABA"]["valid_to"].tolist() == [dt.date(2017, 6, 19)]
    # BRK-B: today's sector, except on the file's days.
    assert sector("BRK-B", dt.date(1999, 12, 31)) == ("Financials", "current")
    assert sector("BRK-B", dt.date(2000, 6, 1)) == ("Industrials", USER_SOURCE)
    assert sector("BRK-B", dt.date(2001, 1, 2)) == ("Financials", "current")
    # GOOGL: the file replaces the assumption before 2018 on its days; the dated change stands.
    assert sector("GOOGL", dt.date(2011, 6, 1))[0] == "Industrials"
    assert sector("GOOGL", dt.date(2013, 6, 3))[0] == "Information Technology"
    assert sector("GOOGL", dt.date(2018, 9, 24))[0] == "Communication Services"
    assert merged.groupby("symbol")["valid_to"].max().eq(POSITIVE_INFINITY).loc[["BRK-B", "GOOGL"]].all()


def test_sector_classification_merges_the_file_and_fails_cleanly_on_a_bad_one(database, tmp_path, monkeypatch):
    resources = {"database": database, "tickers": TickerSelection(tickers=["AAPL"])}
    assets = [ticker_universe, index_membership, sector_classification]
    dg.materialize(assets, resources=resources)
    with database.begin() as conn:
        before = conn.execute(text("SELECT count(*) FROM market.sector_classification")).scalar_one()
        assert not conn.execute(text("SELECT count(*) FROM market.sector_classification WHERE symbol = 'AABA'")
                                ).scalar_one()

    path = tmp_path / "sectors.csv"
    path.write_text(HEADER + "AABA,Information Technology,1999-12-08,2017-06-19\n")
    monkeypatch.setenv(settings.SECTOR_HISTORY_ENV, str(path))
    first = dg.materialize([sector_classification], resources=resources)
    materialization = first.asset_materializations_for_node("sector_classification")[0]
    assert materialization.metadata["sector_history_symbols_added"].value == 1
    assert materialization.metadata["sector_history_file"].value == str(path)
    with database.begin() as conn:
        assert conn.execute(text("SELECT sector, valid_from, valid_to, source FROM market.sector_classification "
                                 "WHERE symbol = 'AABA'")).all() == [
            ("Information Technology", dt.date(1999, 12, 8), dt.date(2017, 6, 19), USER_SOURCE)]

    # Same periods, another file content (a comment): another data version, so sectors go stale.
    path.write_text("# reviewed\n" + HEADER + "AABA,Information Technology,1999-12-08,2017-06-19\n")
    second = dg.materialize([sector_classification], resources=resources)
    versions = [run.asset_materializations_for_node("sector_classification")[0].tags["dagster/data_version"]
                for run in (first, second)]
    assert versions[0] != versions[1]

    path.write_text(HEADER + "AABA,Tech,1999-12-08,2017-06-19\n")
    failed = dg.materialize([sector_classification], resources=resources, raise_on_error=False)
    assert not failed.success
    told = failed.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert told.startswith(f"{path}, line 2: unknown GICS sector 'Tech'")
    with database.begin() as conn:  # nothing changed
        assert conn.execute(text("SELECT count(*) FROM market.sector_classification")).scalar_one() == before + 1


def test_the_readme_example_is_a_valid_file(tmp_path):
    readme = (settings.PROJECT_DIR / "README.md").read_text()
    section = readme[readme.index("## Survivorship: past S&P 500 members"):]
    example = re.search(r"```csv\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "example.csv"
    path.write_text(example)
    merged, report = _merge(path)
    assert report.symbols_added == ["AABA", "AYI"] and report.periods_replacing_assumptions == 1
    assert merged[merged["symbol"] == "AYI"]["sector"].tolist() == ["Industrials"]

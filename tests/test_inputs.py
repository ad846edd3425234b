"""Bad input: one line naming the file and field, exit 2, no traceback (SPEC section 1)."""

import json
import subprocess
import sys

import pytest

import pmjax
from pmjax.cli import main
from pmjax.errors import InputError
from pmjax.instruments import Instrument, parse_instrument
from pmjax.portfolio import load_portfolio, parse_trades


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name, kind, settlement, strike, right", [
    ("BTC-27MAR26-100000-C", "option", "inverse", 100000.0, "call"),
    ("ETH-3JAN26-3000-P", "option", "inverse", 3000.0, "put"),
    ("BTC_USDC-27MAR26-100000-C", "option", "linear", 100000.0, "call"),
    ("BTC-27MAR26", "future", "inverse", None, None),
    ("BTC-PERPETUAL", "perpetual", "inverse", None, None),
    ("ETH_USDC-PERPETUAL", "perpetual", "linear", None, None),
    ("BTC", "spot", "linear", None, None),
])
def test_deribit_names_parse_and_round_trip(name, kind, settlement, strike, right):
    inst = parse_instrument(name)
    assert (inst.kind, inst.settlement, inst.strike, inst.right) == (kind, settlement, strike, right)
    assert inst.name == name
    if inst.expiry is not None:
        assert inst.expiry.hour == 8 and inst.expiry.tzinfo is not None


def test_decimal_strike_uses_d():
    inst = parse_instrument("ETH_USDC-27MAR26-2d5-P")
    assert inst.strike == 2.5 and inst.name == "ETH_USDC-27MAR26-2d5-P"


@pytest.mark.parametrize("name, words", [
    ("XRP-27MAR26", "unknown underlying 'XRP'"),
    ("BTC-27XYZ26-1000-C", "unknown month"),
    ("BTC-31FEB26", "no such date"),
    ("BTC-27MAR26-100000-X", "malformed Deribit name"),
    ("BTC-27MAR26-0-C", "strike must be positive"),
    ("", "instrument name must be text"),
])
def test_bad_names(name, words):
    with pytest.raises(InputError, match=words):
        parse_instrument(name, source="p.yaml", field="positions[0].instrument")


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_yaml_json_csv_portfolios_agree(tmp_path):
    y = write(tmp_path, "a.yaml", """
account: desk-1
margin_currency: BTC
positions:
  - {instrument: BTC-27MAR26-100000-C, quantity: -2}
  - {underlying: ETH, type: option, expiry: 2026-03-27, strike: 3000, right: put, settlement: linear, quantity: 2}
  - {instrument: BTC, quantity: 1}
""")
    p = load_portfolio(y)
    assert p.account == "desk-1" and p.margin_currency == "BTC"
    assert [x.quantity for x in p.positions] == [-2.0, 2.0, 1.0]
    eth = p.positions[1].instrument
    assert eth == Instrument("ETH", "option", "linear", parse_instrument("ETH-27MAR26").expiry, 3000.0, "put")
    j = write(tmp_path, "a.json", json.dumps({"positions": [{"instrument": "BTC-27MAR26-100000-C", "quantity": -2}]}))
    c = write(tmp_path, "a.csv", "instrument,quantity\nBTC-27MAR26-100000-C,-2\n")
    assert load_portfolio(j).positions == load_portfolio(c).positions == p.positions[:1]


def test_duplicates_merge_with_notice(tmp_path, capsys):
    path = write(tmp_path, "d.csv", "instrument,quantity\nBTC-PERPETUAL,1\nBTC-PERPETUAL,2.5\nBTC,1\n")
    p = load_portfolio(path)
    assert [(x.instrument.name, x.quantity) for x in p.positions] == [("BTC-PERPETUAL", 3.5), ("BTC", 1.0)]
    assert len(p.notices) == 1 and "merged" in p.notices[0] and "BTC-PERPETUAL" in p.notices[0]


BAD_PORTFOLIOS = [
    ("unknown.yaml", "positions:\n  - {instrument: DOGE-PERPETUAL, quantity: 1}\n", "positions[0].instrument",
     "unknown underlying"),
    ("malformed.yaml", "positions:\n  - {instrument: BTC-27MAR-1-C, quantity: 1}\n", "positions[0].instrument",
     "malformed Deribit name"),
    ("qty.yaml", "positions:\n  - {instrument: BTC, quantity: lots}\n", "positions[0].quantity", "not a number"),
    ("nan.yaml", "positions:\n  - {instrument: BTC, quantity: .nan}\n", "positions[0].quantity", "not a finite"),
    ("inf.json", '{"positions": [{"instrument": "BTC", "quantity": 1e999}]}', "positions[0].quantity", "not a finite"),
    ("noqty.yaml", "positions:\n  - {instrument: BTC}\n", "positions[0].quantity", "missing quantity"),
    ("empty.yaml", "positions: []\n", "positions", "no positions"),
    ("strike.yaml", "positions:\n  - {underlying: ETH, type: option, expiry: 2026-03-27, strike: -5, right: put, "
                    "quantity: 1}\n", "positions[0].strike", "must be positive"),
    ("right.yaml", "positions:\n  - {underlying: ETH, type: option, expiry: 2026-03-27, strike: 5, right: up, "
                   "quantity: 1}\n", "positions[0].right", "call or put"),
    ("currency.yaml", "margin_currency: EUR\npositions:\n  - {instrument: BTC, quantity: 1}\n", "margin_currency",
     "margin_currency must be"),
    ("broken.yaml", "positions: [\n", None, "not valid YAML"),
    ("broken.json", "{", None, "not valid JSON"),
    ("cols.csv", "name,qty\nBTC,1\n", "header", "instrument,quantity"),
    ("bad.txt", "x", None, "unknown file type"),
]


@pytest.mark.parametrize("name, text, field, words", BAD_PORTFOLIOS)
def test_bad_portfolio_files_exit_2_with_one_line(tmp_path, capsys, name, text, field, words):
    path = write(tmp_path, name, text)
    with pytest.raises(InputError, match=words) as e:
        load_portfolio(path)
    msg = str(e.value)
    assert path in msg and (field is None or field in msg)


def test_unreadable_portfolio(tmp_path):
    with pytest.raises(InputError, match="cannot read file"):
        load_portfolio(str(tmp_path / "missing.yaml"))


BAD_MARKETS = [
    ("m1.yaml", "underlyings: {BTC: {spot: 1}}\n", "as_of", "missing as_of"),
    ("m2.yaml", "as_of: 2026-01-02T00:00:00Z\nunderlyings: {BTC: {spot: -1, vol: {atm: 0.5}}}\n",
     "underlyings.BTC.spot", "must be positive"),
    ("m3.yaml", "as_of: 2026-01-02T00:00:00Z\nunderlyings: {BTC: {spot: 1, vol: {atm: 0}}}\n",
     "underlyings.BTC.vol.atm", "must be positive"),
    ("m4.yaml", "as_of: 2026-01-02T00:00:00Z\nunderlyings: {BTC: {spot: .inf}}\n", "underlyings.BTC.spot",
     "not a finite"),
    ("m5.yaml", "as_of: 2026-01-02T00:00:00Z\nunderlyings: {SOL: {spot: 1}}\n", "underlyings.SOL",
     "unknown underlying"),
    ("m6.yaml", "as_of: 2026-01-02T00:00:00Z\nunderlyings: {BTC: {spot: 1, vol: {smiles: {2026-03-27: "
                "{strikes: [1, 2], vols: [0.5]}}}}}\n", "underlyings.BTC.vol.smiles", "equal length"),
    ("m7.yaml", "as_of: 2026-01-02T00:00:00Z\nunderlyings: {BTC: {spot: 1}}\ncorrelation: {BTC: {ETH: 1.5}}\n",
     "correlation.BTC.ETH", r"in \[-1, 1\]"),
]


@pytest.mark.parametrize("name, text, field, words", BAD_MARKETS)
def test_bad_market_files(tmp_path, name, text, field, words):
    path = write(tmp_path, name, text)
    with pytest.raises(InputError, match=words) as e:
        pmjax.load_market(path)
    assert path in str(e.value) and field in str(e.value)


MARKET = """as_of: 2026-01-02T09:00:00Z
underlyings:
  BTC: {spot: 90000, forwards: {2026-03-27: 91000}, vol: {atm: 0.5}}
  ETH: {spot: 3000}
"""


def test_missing_market_data_says_which(tmp_path, capsys):
    m = write(tmp_path, "m.yaml", MARKET)
    code, out, err = run_cli(capsys, "price", "--market", m, "BTC-25DEC26")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no forward for BTC expiry 2026-12-25" in err and m in err
    code, out, err = run_cli(capsys, "price", "--market", m, "ETH-27MAR26-3000-C")
    assert code == 2 and "no implied vol for ETH" in err and "underlyings.ETH.vol" in err
    code, out, err = run_cli(capsys, "price", "--market", m, "BTC-1JAN26-90000-C")
    assert code == 2 and "expired" in err and "before the market's as_of" in err


def test_cli_json_is_only_json_and_errors_are_one_line(tmp_path, capsys):
    m = write(tmp_path, "m.yaml", MARKET)
    code, out, err = run_cli(capsys, "price", "--json", "--market", m, "BTC-27MAR26-100000-C", "BTC")
    assert code == 0
    doc = json.loads(out)
    assert [r["instrument"] for r in doc["instruments"]] == ["BTC-27MAR26-100000-C", "BTC"]
    assert set(doc["instruments"][0]) >= {"instrument", "underlying", "price_usd", "price_coin", "forward", "vol",
                                          "delta", "gamma", "vega", "theta"}
    code, out, err = run_cli(capsys, "price", "--market", m, "--no-such-flag", "BTC")
    assert code == 2 and err.startswith("pmjax: error:") and err.count("\n") == 1
    code, out, err = run_cli(capsys, "price", "--market", str(tmp_path / "nope.yaml"), "BTC")
    assert code == 2 and "no such file" in err


def test_what_if_trades_parse():
    t = parse_trades("BTC-27MAR26-100000-C:-1, ETH-PERPETUAL:2.5")
    assert [(x.instrument.name, x.quantity) for x in t] == [("BTC-27MAR26-100000-C", -1.0), ("ETH-PERPETUAL", 2.5)]
    with pytest.raises(InputError, match="INSTRUMENT:QTY"):
        parse_trades("BTC-PERPETUAL")
    with pytest.raises(InputError, match="not a number"):
        parse_trades("BTC-PERPETUAL:x")


def test_no_traceback_from_the_console_script(tmp_path):
    bad = write(tmp_path, "bad.yaml", "as_of: 2026-01-02T00:00:00Z\nunderlyings: {BTC: {spot: -1}}\n")
    r = subprocess.run([sys.executable, "-m", "pmjax", "price", "--market", bad, "BTC"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("pmjax: error: ") and "Traceback" not in r.stderr and r.stderr.count("\n") == 1

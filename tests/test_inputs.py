"""Bad input: one line naming the file and field, exit 2, no traceback (SPEC section 1)."""

import json
import re
import subprocess
import sys

import pytest

import pmjax
from pmjax.cli.app import main
from pmjax.core.errors import InputError
from pmjax.core.instruments import Instrument, parse_instrument
from pmjax.io.portfolio import load_portfolio, parse_trades


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
    ("noqty.yaml", "positions:\n  - {instrument: BTC}\n", "positions[0].quantity",
     "positions\\[0\\].quantity: missing"),
    ("nullqty.yaml", "positions:\n  - {instrument: BTC, quantity: }\n", "positions[0].quantity",
     "positions\\[0\\].quantity: missing"),
    ("qtykey.yaml", "positions:\n  - {instrument: BTC, quantity: 1}\n  - {instrument: BTC-PERPETUAL, qty: 5}\n",
     "positions[1].qty", "unknown key\\(s\\) qty \\(a position has instrument, quantity, or underlying, type"),
    ("tab.yaml", "positions:\n\t- {instrument: BTC, quantity: 1}\n", None,
     "not valid YAML at line 2, column 1: a tab character"),
    ("indent.yaml", "positions:\n  - instrument: BTC\n     quantity: 1\n", None,
     "not valid YAML at line 3, column 14: unexpected ':' \\(a bad indent"),
    ("comma.json", '{"positions": [{"instrument": "BTC", "quantity": 1},]}', None,
     "not valid JSON at line 1, column 53"),
    ("empty.yaml", "positions: []\n", "positions", "no positions"),
    ("strike.yaml", "positions:\n  - {underlying: ETH, type: option, expiry: 2026-03-27, strike: -5, right: put, "
                    "quantity: 1}\n", "positions[0].strike", "must be positive"),
    ("right.yaml", "positions:\n  - {underlying: ETH, type: option, expiry: 2026-03-27, strike: 5, right: up, "
                   "quantity: 1}\n", "positions[0].right", "call or put"),
    ("currency.yaml", "margin_currency: EUR\npositions:\n  - {instrument: BTC, quantity: 1}\n", "margin_currency",
     "margin_currency must be"),
    ("broken.yaml", "positions: [\n", None, "not valid YAML"),
    ("broken.json", "{", None, "not valid JSON"),
    ("cols.csv", "name,qty\nBTC,1\n", "header", "instrument,quantity \\(any case\\); found 'name', 'qty'"),
    ("shortrow.csv", "instrument,quantity\nBTC,1\nBTC-PERPETUAL,2\nETH,1\nETH-PERPETUAL\n", "positions[3].quantity",
     "positions\\[3\\].quantity: missing"),
    ("bad.txt", "x", None, "unknown file type"),
]


def assert_one_error_line(code, out, err, *words):
    """Exit 2, nothing on stdout, exactly one stderr line ``pmjax: error: ...`` holding every word."""
    assert code == 2, (code, err)
    assert out == "", out
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("pmjax: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("name, text, field, words", BAD_PORTFOLIOS)
def test_bad_portfolio_files_exit_2_with_one_line(tmp_path, capsys, name, text, field, words):
    path = write(tmp_path, name, text)
    with pytest.raises(InputError, match=words) as e:
        load_portfolio(path)
    msg = str(e.value)
    assert path in msg and (field is None or field in msg)
    # and through the command line: exit 2, one line naming the file and the field
    code, out, err = run_cli(capsys, "margin", path, "--method", "rules")
    line = assert_one_error_line(code, out, err, path, *([f"field {field}"] if field else []))
    assert re.search(words, line), line


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


AS_OF = "as_of: 2026-01-02T00:00:00Z\n"
BAD_MARKETS += [  # mappings and lists of the wrong shape: an InputError naming the field, not a crash
    ("m8.yaml", AS_OF + "underlyings: {BTC: {spot: 1, vol: {smiles: [1, 2]}}}\n", "underlyings.BTC.vol.smiles",
     "must be a mapping"),
    ("m9.yaml", AS_OF + "underlyings: {BTC: {spot: 1, forwards: [90000]}}\n", "underlyings.BTC.forwards",
     "must be a mapping"),
    ("m10.json", '{"as_of": "2026-01-02T00:00:00Z", "underlyings": {"BTC": {"spot": 1}}, "correlation": [0.5]}',
     "correlation", "must be a mapping"),
    ("m11.yaml", AS_OF + "underlyings: {BTC: {spot: 1}}\ncorrelation: {BTC: [0.5]}\n", "correlation.BTC",
     "must be a mapping"),
    ("m12.yaml", AS_OF + "underlyings: {BTC: {spot: 1, vol: {smiles: {2026-03-27: {strikes: 90000, vols: 0.5}}}}}\n",
     "underlyings.BTC.vol.smiles.2026-03-27.strikes", "must be a list"),
    ("m13.yaml", AS_OF + "underlyings: {BTC: {spot: 1, vol: {smiles: {2026-03-27: {strikes: [90000], vols: 0.5}}}}}\n",
     "underlyings.BTC.vol.smiles.2026-03-27.vols", "must be a list"),
    ("m14.yaml", AS_OF + "underlyings: {BTC: {spot: 1, vol: {smiles: {2026-03-27: [0.5]}}}}\n",
     "underlyings.BTC.vol.smiles.2026-03-27", "needs strikes and vols"),
    # a smile dated before as_of, like a forward, is stale data
    ("m15.yaml", AS_OF + "underlyings: {BTC: {spot: 1, vol: {smiles: {2025-12-26: {strikes: [1], vols: [0.5]}}}}}\n",
     "underlyings.BTC.vol.smiles.2025-12-26", "before as_of"),
    # one strike quoted twice with different vols
    ("m16.yaml", AS_OF + "underlyings: {BTC: {spot: 1, vol: {smiles: {2026-03-27: {strikes: [1, 2, 1], "
                         "vols: [0.5, 0.6, 0.7]}}}}}\n", "underlyings.BTC.vol.smiles.2026-03-27",
     "strike 1 is quoted twice with different vols"),
]


@pytest.mark.parametrize("name, text, field, words", BAD_MARKETS)
def test_bad_market_files(tmp_path, capsys, name, text, field, words):
    path = write(tmp_path, name, text)
    with pytest.raises(InputError, match=words) as e:
        pmjax.load_market(path)
    assert path in str(e.value) and field in str(e.value)
    code, out, err = run_cli(capsys, "price", "--market", path, "BTC")
    line = assert_one_error_line(code, out, err, path, f"field {field}")
    assert re.search(words, line), line


def test_smile_duplicate_strike_with_the_same_vol_is_one_point(tmp_path):
    path = write(tmp_path, "m.yaml", AS_OF + "underlyings: {BTC: {spot: 100, vol: {smiles: {2026-03-27: "
                                            "{strikes: [90, 110, 90], vols: [0.5, 0.6, 0.5]}}}}}\n")
    smile = next(iter(pmjax.load_market(path).underlying("BTC").smiles.values()))
    assert smile.strikes.tolist() == [90.0, 110.0] and smile.vols.tolist() == [0.5, 0.6]


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


NOT_UTF8 = b"positions:\n  - {instrument: BTC, quantity: 1}  # \xff\xfe caf\xe9\n"


@pytest.mark.parametrize("name, command", [
    ("p.yaml", ["margin", "{path}", "--method", "rules"]),
    ("p.json", ["margin", "{path}", "--method", "rules"]),
    ("p.csv", ["margin", "{path}", "--method", "rules"]),
    ("m.yaml", ["price", "--market", "{path}", "BTC"]),
    ("m.json", ["price", "--market", "{path}", "BTC"]),
    ("chain.csv", ["price", "--market", "{path}", "BTC"]),
    ("c.yaml", ["margin", "{portfolio}", "--method", "rules", "--config", "{path}"]),
])
def test_non_utf8_files_exit_2_naming_the_file(tmp_path, capsys, name, command):
    path = tmp_path / name
    path.write_bytes(NOT_UTF8)
    portfolio = write(tmp_path, "ok.yaml", "positions:\n  - {instrument: BTC, quantity: 1}\n")
    argv = [a.format(path=str(path), portfolio=portfolio) for a in command]
    code, out, err = run_cli(capsys, *argv)
    line = assert_one_error_line(code, out, err, str(path))
    assert "UTF-8" in line or "not valid CSV" in line, line


EXPIRED = "BTC-26DEC25-90000-C"  # expired a week before the bundled 2026-01-02 market


@pytest.mark.parametrize("name, text, field", [
    ("x.yaml", f"positions:\n  - {{instrument: BTC-PERPETUAL, quantity: 1}}\n  - {{instrument: {EXPIRED}, "
               "quantity: -1}\n", "positions[1].instrument"),
    ("x.csv", f"instrument,quantity\nBTC-PERPETUAL,1\n{EXPIRED},-1\n", "positions[1].instrument"),
    ("x.json", json.dumps({"positions": [{"underlying": "BTC", "type": "future", "expiry": "2025-12-26",
                                          "quantity": 1}]}), "positions[0].expiry"),
])
def test_expired_position_names_the_portfolio_file_and_position(tmp_path, capsys, name, text, field):
    path = write(tmp_path, name, text)
    code, out, err = run_cli(capsys, "margin", path, "--method", "rules")
    line = assert_one_error_line(code, out, err, f"{path}, field {field}:", "expired on 2025-12-26",
                                 "before the market's as_of")
    assert "field as_of" not in line


def test_expired_instrument_on_the_command_line_names_the_argument(tmp_path, capsys):
    code, out, err = run_cli(capsys, "price", "BTC-PERPETUAL", EXPIRED)
    assert_one_error_line(code, out, err, f"command line, field INSTRUMENT {EXPIRED}:", "expired")
    ok = write(tmp_path, "ok.yaml", "positions:\n  - {instrument: BTC-PERPETUAL, quantity: 1}\n")
    code, out, err = run_cli(capsys, "margin", ok, "--method", "rules", "--what-if", f"BTC:1,{EXPIRED}:1")
    assert_one_error_line(code, out, err, "--what-if, field trade 2:", "expired")


def test_notices_reach_stderr_under_json(tmp_path, capsys):
    m = write(tmp_path, "m.yaml", MARKET)
    dup = write(tmp_path, "dup.yaml", "positions:\n  - {instrument: BTC-PERPETUAL, quantity: 1}\n"
                                      "  - {instrument: BTC-PERPETUAL, quantity: 2}\n")
    for flags in (["--json"], []):
        code, out, err = run_cli(capsys, "margin", dup, "--market", m, "--method", "rules", *flags)
        assert code == 0
        assert [ln for ln in err.splitlines() if ln.startswith("pmjax: notice:")] == [
            f"pmjax: notice: {dup}: 2 positions in BTC-PERPETUAL merged into one of quantity 3"], err
        if flags:
            assert json.loads(out)["positions"][0]["quantity"] == 3  # stdout: exactly one JSON document
    # a chain market's skipped rows, under price --json
    from test_market import GOOD, HEADER

    chain = write(tmp_path, "chain.csv", "\n".join([HEADER, GOOD, GOOD.replace(",0.42,", ",,")]) + "\n")
    code, out, err = run_cli(capsys, "price", "--json", "--market", chain, "BTC-30JAN26-90000-C")
    assert code == 0 and json.loads(out)["instruments"][0]["instrument"] == "BTC-30JAN26-90000-C"
    assert "pmjax: notice:" in err and "skipped 1 row(s)" in err


@pytest.mark.parametrize("before, after", [
    (["--json"], []), ([], ["--json"]), (["--debug", "--json"], []), (["--json", "--precision", "float32"], []),
    (["--json"], ["--precision", "float32"]), (["--precision", "float32"], ["--json"]),
])
def test_global_flags_before_or_after_the_command(tmp_path, capsys, before, after):
    m = write(tmp_path, "m.yaml", MARKET)
    code, out, err = run_cli(capsys, *before, "price", "--market", m, "BTC-27MAR26-100000-C", *after)
    assert code == 0, err
    doc = json.loads(out)
    price = doc["instruments"][0]["price_usd"]
    assert price > 0
    code, out, err = run_cli(capsys, "price", "--json", "--market", m, "BTC-27MAR26-100000-C")
    f64 = json.loads(out)["instruments"][0]["price_usd"]
    if "float32" in before + after:
        assert price == pytest.approx(f64, rel=1e-5) and price != f64
    else:
        assert price == f64


def test_debug_before_the_command_is_accepted(tmp_path, capsys):
    m = write(tmp_path, "m.yaml", MARKET)
    code, out, err = run_cli(capsys, "--debug", "price", "--market", m, "BTC")
    assert code == 0 and err == "" and "BTC" in out
    code, out, err = run_cli(capsys, "--debug", "price", "--market", m, "DOGE-PERPETUAL")
    assert code == 2 and "Traceback" in err
    assert err.splitlines()[-1].startswith("pmjax: error: command line, field INSTRUMENT DOGE-PERPETUAL: unknown")


@pytest.mark.parametrize("text, section", [
    ("var: 5\n", "var"),
    ("var: [1, 2]\n", "var"),
    ("span: {underlyings: {BTC: 0.1}}\n", "span.underlyings.BTC"),
    ("deribit: on\n", "deribit"),
    ("rules: {pm_minimum_equity: 100000}\n", "rules.pm_minimum_equity"),
    ("monitor: [span]\n", "monitor"),
])
def test_config_sections_must_be_mappings(tmp_path, capsys, text, section):
    cfg = write(tmp_path, "c.yaml", text)
    ok = write(tmp_path, "ok.yaml", "positions:\n  - {instrument: BTC-PERPETUAL, quantity: 1}\n")
    code, out, err = run_cli(capsys, "margin", ok, "--method", "rules", "--config", cfg)
    assert_one_error_line(code, out, err, f"{cfg}, field {section}:", "must be a mapping")


def test_empty_config_section_means_the_defaults(tmp_path):
    from pmjax.io.config import default_config, load_config

    cfg = write(tmp_path, "c.yaml", "var:\nspan: {underlyings: {BTC: }}\n")
    loaded = load_config(cfg)
    assert loaded["var"] == default_config()["var"] and loaded["span"] == default_config()["span"]


@pytest.mark.parametrize("flags, words", [
    (["--seed", "-1"], "--seed: must be in [0, 2**63 - 1], got -1"),
    (["--paths", "99"], "--paths: must be"),
    (["--confidence", "1.5"], "--confidence: must be"),
    (["--what-if", ""], "--what-if: no trades given"),
    (["--what-if", " , "], "--what-if: no trades given"),
])
def test_bad_flags_name_the_flag(tmp_path, capsys, flags, words):
    ok = write(tmp_path, "ok.yaml", "positions:\n  - {instrument: BTC-PERPETUAL, quantity: 1}\n")
    code, out, err = run_cli(capsys, "margin", ok, "--method", "rules", *flags)
    line = assert_one_error_line(code, out, err, words)
    assert "config" not in line


# ----------------------------------------------------------------------------- issue 14: silent acceptance made loud

def test_spreadsheet_csv_with_bom_crlf_and_capitalised_header_loads(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfInstrument , QUANTITY\r\nBTC-PERPETUAL,1.5\r\nBTC,-2\r\n\r\n")
    p = load_portfolio(str(path))
    assert [(x.instrument.name, x.quantity) for x in p.positions] == [("BTC-PERPETUAL", 1.5), ("BTC", -2.0)]
    assert p.notices == []


def test_csv_extra_columns_give_a_notice(tmp_path, capsys):
    path = write(tmp_path, "extra.csv", "instrument,quantity,note,Desk\nBTC-PERPETUAL,1,hedge,A\n")
    p = load_portfolio(path)
    assert [(x.instrument.name, x.quantity) for x in p.positions] == [("BTC-PERPETUAL", 1.0)]
    assert p.notices == [f"{path}: ignored column(s) 'note', 'desk' (a CSV portfolio reads instrument,quantity)"]
    code, out, err = run_cli(capsys, "margin", path, "--method", "rules", "--json")
    assert code == 0 and f"pmjax: notice: {path}: ignored column(s) 'note', 'desk'" in err


def test_unknown_config_key_names_the_key_and_the_expected_ones(tmp_path, capsys):
    ok = write(tmp_path, "ok.yaml", "positions:\n  - {instrument: BTC-PERPETUAL, quantity: 1}\n")
    cfg = write(tmp_path, "c.yaml", "var: {path: 5000}\n")
    code, out, err = run_cli(capsys, "margin", ok, "--method", "rules", "--config", cfg)
    assert_one_error_line(code, out, err, f"{cfg}, field var.path: unknown key 'path' (section var has model, nu, "
                                          "confidence, paths,")
    cfg = write(tmp_path, "t.yaml", "spann: {underlyings: {BTC: {price_scan_range: 0.1}}}\n")
    code, out, err = run_cli(capsys, "margin", ok, "--method", "rules", "--config", cfg)
    assert_one_error_line(code, out, err, f"{cfg}, field spann: unknown key 'spann' (a config has ", "span")
    cfg = write(tmp_path, "u.yaml", "span: {underlyings: {BTC: {price_scan: 0.1}}}\n")
    code, out, err = run_cli(capsys, "margin", ok, "--method", "rules", "--config", cfg)
    assert_one_error_line(code, out, err, "field span.underlyings.BTC.price_scan: unknown key 'price_scan' "
                                          "(section span.underlyings.BTC has price_scan_range")


def test_method_list_is_deduplicated_and_empty_is_an_error(tmp_path, capsys):
    from pmjax.cli.commands.margin import parse_methods

    assert parse_methods("span,SPAN") == ["span"]
    assert parse_methods(" Rules , span ,rules") == ["rules", "span"]
    ok = write(tmp_path, "ok.yaml", "positions:\n  - {instrument: BTC-PERPETUAL, quantity: 1}\n")
    code, out, err = run_cli(capsys, "margin", ok, "--method", "rules,RULES", "--json")
    assert code == 0 and [k for k in ("rules", "span", "var", "deribit") if k in json.loads(out)] == ["rules"]
    for empty in ("", " , "):
        code, out, err = run_cli(capsys, "margin", ok, "--method", empty)
        assert_one_error_line(code, out, err, "--method: no method given")


@pytest.mark.parametrize("name, words", [
    ("BTC-27MAR26-101234-C", "no strike 101234 on 27MAR26 (nearest listed strikes: 100000, 102000)"),
    ("BTC-28MAR26-100000-C", "no BTC options expire on 28MAR26 (nearest listed expiries: 27MAR26, 26JUN26)"),
    ("BTC-27MAR26-7000000-C", "no strike 7000000 on 27MAR26 (nearest listed strikes: "),
])
def test_unlisted_deribit_names_on_a_chain_market_are_errors(tmp_path, capsys, name, words):
    code, out, err = run_cli(capsys, "price", name)
    assert_one_error_line(code, out, err, f"command line, field INSTRUMENT {name}: {name} is not listed in the "
                                          "chain deribit-20260102", words, "explicit form")
    ok = write(tmp_path, "ok.yaml", "positions:\n  - {instrument: BTC-PERPETUAL, quantity: 1}\n")
    code, out, err = run_cli(capsys, "margin", ok, "--method", "rules", "--what-if", f"BTC:1,{name}:1")
    assert_one_error_line(code, out, err, "--what-if, field trade 2:", words)
    book = write(tmp_path, "book.yaml", f"positions:\n  - {{instrument: BTC, quantity: 1}}\n"
                                        f"  - {{instrument: {name}, quantity: -1}}\n")
    code, out, err = run_cli(capsys, "margin", book, "--method", "rules")
    assert_one_error_line(code, out, err, f"{book}, field positions[1].instrument:", words)
    # a YAML/JSON market has no chain: any strike or expiry is valued, as before
    m = write(tmp_path, "m.yaml", MARKET.replace("91000}", "91000}, rate: 0.04"))  # a rate: forwards past 27MAR26
    code, out, err = run_cli(capsys, "price", "--market", m, name)
    assert code == 0 and err == "" and name in out


def test_unlisted_contract_in_the_explicit_form_is_valued_with_a_notice(tmp_path, capsys):
    book = write(tmp_path, "x.yaml", "positions:\n  - {underlying: BTC, type: option, expiry: 2026-03-27, "
                                     "strike: 101234, right: call, quantity: -1}\n")
    code, out, err = run_cli(capsys, "margin", book, "--method", "rules", "--json")
    assert code == 0 and json.loads(out)["positions"][0]["instrument"] == "BTC-27MAR26-101234-C"
    assert err.splitlines() == [f"pmjax: notice: {book}: positions[0]: BTC-27MAR26-101234-C is not listed in the "
                                "chain deribit-20260102; valued from the market's smile and forward curve "
                                "(explicit form)"]


def test_many_notices_print_the_first_ten_and_a_count(capsys):
    from pmjax.cli import app

    app.notices([f"note {i}" for i in range(15)])
    lines = capsys.readouterr().err.splitlines()
    assert lines[:10] == [f"pmjax: notice: note {i}" for i in range(10)]
    assert lines[10:] == ["pmjax: notice: ... and 5 more notices (--debug prints every one)"]
    app.notices([f"note {i}" for i in range(10)])
    assert len(capsys.readouterr().err.splitlines()) == 10

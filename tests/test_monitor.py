"""The margin monitor: a replay of the January -> February 2026 sell-off margin-calls a short-put account
(equity below the default primary's maintenance requirement), equity between maintenance and initial is an
initial breach and not a call, equity follows hand-derived values, every update after the first compiles
nothing, and the log is the same bytes run after run."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import yaml

from pmjax.io.accounts import load_accounts
from pmjax.cli.commands import monitor as monitor_cmd
from pmjax.io.config import deep_merge, load_config
from pmjax.apps.margin import deribit_report
from pmjax.core.errors import InputError
from pmjax.core.greeks import price_instruments
from pmjax.io.market import bundled_path, load_market
from pmjax.apps.monitor import Monitor, monitor_settings, plot_equity, replay, replay_markets
from pmjax.measures.rules import rules_margin, rules_params, rules_section
from pmjax.io.portfolio import parse_trades
from pmjax.apps.margin import span_report

PUT = "BTC-27MAR26-80000-P"  # struck ~10% below BTC on 2026-01-02, expiring after the February sell-off
ACCOUNTS = {"accounts": [
    {"account": "short-puts", "collateral": {"USD": 200_000}, "positions": [{"instrument": PUT, "quantity": -10}]},
    {"account": "hedged-btc", "margin_currency": "BTC", "collateral": {"BTC": 2, "USD": 1000},
     "positions": [{"instrument": "BTC-27MAR26-80000-P", "quantity": 5}, {"instrument": "BTC-27MAR26", "quantity": -1},
                   {"instrument": "ETH_USDC-PERPETUAL", "quantity": 3},
                   {"instrument": "BTC-30JAN26-95000-P", "quantity": -1}]},  # expires before Feb 6: settles
]}
SELL_OFF = "deribit-20260102,deribit-20260206"


@pytest.fixture(scope="module")
def accounts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("accounts") / "accounts.yaml"
    path.write_text(yaml.safe_dump(ACCOUNTS))
    return str(path)


@pytest.fixture(scope="module")
def markets():
    return replay_markets(SELL_OFF)


@pytest.fixture(scope="module")
def records(accounts_file, markets):
    return replay(load_accounts(accounts_file), markets, load_config(), methods=["span", "deribit", "rules"])


def by(records, account, step):
    return next(r for r in records if r["account"] == account and r["step"] == step)


def test_sell_off_margin_calls_the_short_put_account(records):
    start, end = by(records, "short-puts", 0), by(records, "short-puts", 1)
    assert start["primary"] == end["primary"] == "deribit"  # the default: a real maintenance level
    for m in ("span", "deribit", "rules"):  # no margin call at the start by any method
        assert start["margins"][m]["excess"] > 0 and start["margins"][m]["status"] in ("ok", "initial_breach"), m
    assert start["equity"] >= start["margins"]["deribit"]["initial_requirement"]  # above initial too
    assert start["status"] == "ok" and start["events"] == []
    d = end["margins"]["deribit"]
    assert d["requirement"] == d["maintenance"] < d["initial"] == d["initial_requirement"]
    assert end["equity"] < d["requirement"]  # below Deribit's maintenance margin
    assert end["status"] in ("margin_call", "liquidation_warning")
    assert [e["type"] for e in end["events"]][0] == "margin_call"
    assert end["events"][0]["method"] == "deribit"
    assert end["events"][0]["threshold"] == d["maintenance"]
    assert end["events"][0]["shortfall"] == pytest.approx(d["maintenance"] - end["equity"])
    assert end["equity"] < start["equity"] - 100_000  # the puts went deep in the money


@pytest.mark.parametrize("primary", ["deribit", "span", "rules"])
def test_equity_between_maintenance_and_initial_is_a_breach_not_a_call(accounts_file, markets, primary):
    """The short-put account on 2026-01-02 with its USD collateral set so that its equity lies just below
    the initial requirement, between the two levels, and just below the maintenance requirement (the
    margin figures do not depend on USD collateral in a USD account; thresholds from the computed ones)."""
    config = load_config()
    accounts = load_accounts(accounts_file)[:1]
    base = Monitor(accounts, markets[0], config, methods=["span", "deribit", "rules"], primary=primary)
    rec = base.update(markets[0])[0]
    m = rec["margins"][primary]
    maint, init = m["requirement"], m["initial_requirement"]
    assert 0.0 < maint < init
    gap = init - maint
    for target, status, events in ((init + 1e-6 * gap, "ok", []),
                                   (init - 1e-6 * gap, "initial_breach", ["initial_breach"]),
                                   (0.5 * (maint + init), "initial_breach", ["initial_breach"]),
                                   (maint + 1e-6 * gap, "initial_breach", ["initial_breach"]),
                                   (maint - 1e-6 * gap, "margin_call", ["margin_call"])):
        mon = Monitor(accounts, markets[0], config, methods=["span", "deribit", "rules"], primary=primary)
        mon.collateral[0, 0] += target - rec["equity"]  # USD collateral: equity moves one for one
        r = mon.update(markets[0])[0]
        assert r["equity"] == pytest.approx(target, rel=1e-12)
        assert r["margins"][primary]["requirement"] == maint and r["margins"][primary]["initial_requirement"] == init
        assert r["status"] == status, (target, maint, init)
        assert [e["type"] for e in r["events"]] == events
        if events:
            threshold = init if status == "initial_breach" else maint
            assert r["events"][0]["threshold"] == threshold and r["events"][0]["shortfall"] > 0


def test_equity_is_collateral_plus_marks_plus_futures_pnl(records, markets):
    m0, m1 = markets
    put = parse_trades(f"{PUT}:1")[0].instrument
    for step, m in enumerate(markets):  # short puts: USD collateral + 10 short puts at the Black-76 mark
        mark = price_instruments([put], m)
        assert by(records, "short-puts", step)["equity"] == pytest.approx(200_000 - 10 * mark[0]["price_usd"],
                                                                          rel=1e-12)
    # BTC account on Feb 6, by hand: coins = collateral + settled put + put marks / S + futures P&L
    s1 = m1.spot("BTC")
    e0, e1 = m0.spot("ETH"), m1.spot("ETH")
    inst = parse_trades("BTC-27MAR26-80000-P:1")[0].instrument
    f0, f1 = m0.forward("BTC", inst.expiry), m1.forward("BTC", inst.expiry)
    put_usd = price_instruments([inst], m1)[0]["price_usd"]
    settled = -(95_000 - s1) / s1  # short 1 inverse put, intrinsic at the index of the first update past expiry
    inverse_future = -1 * (1 - f0 / f1)  # coins: q F0 (1/F0 - 1/F1)
    linear_perp = 3 * (e1 - e0) / s1  # USD -> BTC
    expected = 2 + 1000 / s1 + settled + 5 * put_usd / s1 + inverse_future + linear_perp
    rec = by(records, "hedged-btc", 1)
    assert rec["equity"] == pytest.approx(expected, rel=1e-12)
    assert rec["settled"] == [{"instrument": "BTC-30JAN26-95000-P", "quantity": -1.0, "index": s1,
                               "amount": pytest.approx(settled, rel=1e-15), "currency": "BTC",
                               "expiry": "2026-01-30T08:00:00+00:00", "settlement_source": "next_market"}]
    assert by(records, "hedged-btc", 0)["futures_pnl"] == 0.0


def test_batch_margins_equal_the_single_account_reports(records, markets, accounts_file):
    config = load_config()
    portfolios = load_accounts(accounts_file)
    live = portfolios[1].with_trades(parse_trades("BTC-30JAN26-95000-P:1"))  # the expired put, settled
    live.positions = [p for p in live.positions if p.quantity != 0.0]
    for step, (p, m) in enumerate([(portfolios[0], markets[0]), (portfolios[0], markets[1]), (live, markets[1])]):
        rec = by(records, p.account, 0 if step == 0 else 1)
        span, ratio = span_report(p, m, config), config["monitor"]["span_initial_ratio"]
        s = rec["margins"]["span"]
        assert s["initial"] == pytest.approx(span["total"], rel=1e-12, abs=1e-12)
        maintenance = max(span["risk"] / ratio - span["nov"], 0.0)
        assert s["maintenance"] == pytest.approx(maintenance, rel=1e-12, abs=1e-12)
        assert s["initial_requirement"] == pytest.approx(span["total"] + span["nov"], rel=1e-12)
        assert s["requirement"] == pytest.approx(maintenance + span["nov"], rel=1e-12)
        deribit = deribit_report(p, m, config)
        for k in ("initial", "maintenance"):
            assert rec["margins"]["deribit"][k] == pytest.approx(deribit[k], rel=1e-12)
        assert rec["margins"]["deribit"]["requirement"] == rec["margins"]["deribit"]["maintenance"]
        rules = rules_section(rules_margin(p, m, rules_params(config)))
        for k in ("initial", "maintenance"):
            assert rec["margins"]["rules"][k] == pytest.approx(rules[k], rel=1e-12)


def test_market_updates_do_not_recompile(accounts_file, markets, compile_log):
    mon = Monitor(load_accounts(accounts_file), markets[0], load_config(), methods=["span", "deribit", "rules"])
    first = mon.update(markets[0])
    books_before = {k: v.copy() for k, v in mon.fields.items()}
    with compile_log() as log:
        second = mon.update(markets[1])
        third = mon.update(markets[1])
    assert log.compiles() == 0, log.messages
    # the structural arrays stayed, the market arrays moved
    for k in ("underlying", "kind", "inverse", "is_call", "strike"):
        assert np.array_equal(books_before[k], mon.fields[k]), k
    assert not np.array_equal(books_before["spot"], mon.fields["spot"])
    assert first[0]["equity"] != second[0]["equity"]
    assert [r["equity"] for r in second] == [r["equity"] for r in third]


def run_command(accounts_file, out, replay_source, **kw):
    args = argparse.Namespace(accounts=accounts_file, replay=replay_source, market="deribit-20260102",
                              methods=kw.get("methods", "span,deribit"), primary=kw.get("primary"),
                              liquidation_fraction=kw.get("liquidation_fraction"), config=None,
                              out=str(out) if out else None, json=True, precision="float64",
                              settlements=kw.get("settlements"))
    return monitor_cmd.run(args)


def test_replay_of_a_chain_directory_writes_a_deterministic_log_and_a_png(tmp_path, accounts_file):
    chains = tmp_path / "chains"
    chains.mkdir()
    for name in SELL_OFF.split(","):
        src = bundled_path(name)
        (chains / src.rsplit("/", 1)[-1]).write_bytes(open(src, "rb").read())
    doc1, text = run_command(accounts_file, tmp_path / "a", str(chains))
    doc2, _ = run_command(accounts_file, tmp_path / "b", str(chains))
    log1, log2 = (tmp_path / d / monitor_cmd.LOG_NAME for d in "ab")
    assert log1.read_bytes() == log2.read_bytes()
    lines = [json.loads(x) for x in log1.read_text().splitlines()]
    assert len(lines) == 2 * 2  # one per account per step
    assert [(r["step"], r["account"]) for r in lines] == [(0, "short-puts"), (0, "hedged-btc"),
                                                          (1, "short-puts"), (1, "hedged-btc")]
    assert set(lines[0]["margins"]) == {"span", "deribit"}
    png = (tmp_path / "a" / monitor_cmd.PLOT_NAME).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert doc1["accounts"][0]["first_margin_call"]["step"] == 1
    assert doc1["records"] == doc2["records"] and "short-puts" in text


def test_spot_path_replay_is_sticky_strike_and_fraction_sets_the_warning(tmp_path, accounts_file):
    m0 = load_market("deribit-20260102")
    path = tmp_path / "path.csv"
    path.write_text("timestamp,BTC,ETH\n"
                    f"{m0.as_of.isoformat()},{m0.spot('BTC')},{m0.spot('ETH')}\n"
                    "2026-01-10T08:00:00Z,72000,\n"
                    "2026-01-20T08:00:00Z,65000,2500\n")
    markets = replay_markets(str(path), "deribit-20260102")
    inst = parse_trades(f"{PUT}:1")[0].instrument
    assert markets[1].vol("BTC", inst.expiry, 72_000) == pytest.approx(m0.vol("BTC", inst.expiry, 72_000), rel=1e-12)
    assert markets[1].forward("BTC", inst.expiry) == pytest.approx(m0.forward("BTC", inst.expiry) * 72_000
                                                                   / m0.spot("BTC"), rel=1e-12)
    assert markets[1].spot("ETH") == m0.spot("ETH") and markets[2].spot("ETH") == 2500
    doc, _ = run_command(accounts_file, None, str(path), methods="span")
    assert [by(doc["records"], "short-puts", s)["status"] for s in range(3)][0] == "ok"
    rec = by(doc["records"], "short-puts", 1)
    ratio = rec["equity"] / rec["margins"]["span"]["requirement"]
    assert 0.0 < ratio < 1.0  # margin call at BTC 72k, equity still positive
    lo, hi = ratio - 0.02, ratio + 0.02
    for frac, status in ((lo, "margin_call"), (hi, "liquidation_warning")):
        r = by(run_command(accounts_file, None, str(path), methods="span", liquidation_fraction=frac)[0]["records"],
               "short-puts", 1)
        assert r["status"] == status
        assert [e["type"] for e in r["events"]] == (["margin_call"] if status == "margin_call"
                                                     else ["margin_call", "liquidation_warning"])


def test_settings_and_sources_are_validated(tmp_path):
    config = load_config()
    assert monitor_settings(config).methods == ("span", "deribit")
    assert monitor_settings(config).primary == "deribit"  # a method with a maintenance level by default
    assert monitor_settings(config, methods="span").primary == "span"  # the config's primary left out
    assert monitor_settings(config, methods="var,rules").primary == "rules"
    assert monitor_settings(deep_merge(config, {"monitor": {"primary": None}}), methods="span,var").primary == "span"
    assert monitor_settings(config).span_initial_ratio == 1.1
    with pytest.raises(InputError, match="span_initial_ratio"):
        monitor_settings(deep_merge(config, {"monitor": {"span_initial_ratio": 0.9}}))
    with pytest.raises(InputError, match="primary"):  # config primary and methods disagree
        monitor_settings(deep_merge(config, {"monitor": {"methods": ["span"]}}))
    with pytest.raises(InputError, match="liquidation_fraction"):
        monitor_settings(deep_merge(config, {"monitor": {"liquidation_fraction": 0}}))
    with pytest.raises(InputError, match="primary"):
        monitor_settings(config, methods="span", primary="deribit")
    with pytest.raises(InputError, match="unknown method"):
        monitor_settings(config, methods="span,bogus")
    with pytest.raises(InputError, match="time order"):
        replay_markets("deribit-20260206,deribit-20260102")
    bad = tmp_path / "p.csv"
    bad.write_text("timestamp,BTC\n2026-01-10T00:00:00Z,80000\n2026-01-09T00:00:00Z,70000\n")
    with pytest.raises(InputError, match="must not decrease"):
        replay_markets(str(bad))


def test_unwritable_out_fails_before_the_replay_in_one_line(tmp_path, accounts_file, monkeypatch, capsys):
    from pmjax import cli

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    called = []
    import pmjax.apps.monitor

    monkeypatch.setattr(pmjax.apps.monitor, "replay_markets", lambda *a, **k: called.append(a))  # run imports it
    with pytest.raises(InputError, match="cannot write"):
        run_command(accounts_file, blocker / "sub", SELL_OFF)
    assert called == []  # nothing replayed
    capsys.readouterr()
    rc = cli.main(["monitor", accounts_file, "--replay", SELL_OFF, "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert rc == 2 and called == []
    assert err.count("\n") == 1 and err.startswith("pmjax: error:") and "cannot write" in err


def settled_put(doc, step):
    """The hedged-btc account's settlement of its short BTC-30JAN26-95000-P (expiry 2026-01-30 08:00 UTC)."""
    return by(doc["records"], "hedged-btc", step)["settled"]


def test_expiry_between_two_chains_settles_at_the_given_settlement_index(tmp_path, accounts_file):
    """Replaying 2026-01-02 -> 2026-02-06, the 30 Jan put settles at the --settlements index (84,000 here),
    not at the 6 Feb index: short 1 inverse put, -(95,000 - 84,000) / 84,000 BTC; without it, at 6 Feb."""
    file = tmp_path / "settle.yaml"
    file.write_text("settlements:\n  BTC: {2026-01-30: 84000, 2026-02-27: 1}\n  ETH: {2026-01-30: 3000}\n")
    doc, _ = run_command(accounts_file, None, SELL_OFF, settlements=str(file))
    [s] = settled_put(doc, 1)
    assert (s["index"], s["settlement_source"]) == (84_000.0, "settlements")
    assert s["amount"] == pytest.approx(-(95_000 - 84_000) / 84_000, rel=1e-15)
    [s] = settled_put(run_command(accounts_file, None, SELL_OFF)[0], 1)
    assert s["settlement_source"] == "next_market" and s["index"] == load_market("deribit-20260206").spot("BTC")
    file.write_text("settlements: {BTC: {2026-01-30: -5}}\n")
    with pytest.raises(InputError, match="settlements.BTC"):
        run_command(accounts_file, None, SELL_OFF, settlements=str(file))


def test_expiry_on_a_spot_path_settles_at_the_path_interpolated_in_time(tmp_path, accounts_file):
    """Path points 2026-01-20 08:00 (BTC 90,000) and 2026-02-05 08:00 (70,000) around the 2026-01-30 08:00
    expiry: 10 of 16 days, index = 90,000 + 10/16 x (70,000 - 90,000) = 77,500 (not 70,000, the next
    point); a YAML path's settlements: key takes precedence."""
    m0 = load_market("deribit-20260102")
    rows = [(m0.as_of.isoformat(), m0.spot("BTC")), ("2026-01-20T08:00:00Z", 90_000), ("2026-02-05T08:00:00Z", 70_000)]
    path = tmp_path / "path.csv"
    path.write_text("timestamp,BTC\n" + "".join(f"{t},{b}\n" for t, b in rows))
    doc, _ = run_command(accounts_file, None, str(path), methods="span")
    assert settled_put(doc, 1) == []
    [s] = settled_put(doc, 2)
    assert (s["index"], s["settlement_source"]) == (77_500.0, "path")
    assert s["amount"] == pytest.approx(-(95_000 - 77_500) / 77_500, rel=1e-15)
    yml = tmp_path / "path.yaml"
    yml.write_text(yaml.safe_dump({"path": [{"timestamp": t, "BTC": b} for t, b in rows],
                                   "settlements": {"BTC": {"2026-01-30": 80_000}}}))
    [s] = settled_put(run_command(accounts_file, None, str(yml), methods="span")[0], 2)
    assert (s["index"], s["settlement_source"]) == (80_000.0, "settlements")


CALENDAR = {"account": "put-calendar", "collateral": {"USD": 20_000},
            "positions": [{"instrument": "BTC-30JAN26-90000-P", "quantity": -10},
                          {"instrument": "BTC-27MAR26-90000-P", "quantity": 10}]}


def test_span_requirement_on_equity_is_maintenance_plus_nov_after_the_front_leg_settles(tmp_path):
    """After the short 30 Jan leg settles, only 10 long puts remain: SPAN's maintenance max(risk / r - nov, 0)
    is 0 (their value covers their risk) and the requirement compared with equity (which counts the puts'
    value) is maintenance + nov = the long puts' value: the record shows nov, the plot line is labelled so."""
    file = tmp_path / "cal.yaml"
    file.write_text(yaml.safe_dump({"accounts": [CALENDAR]}))
    doc, _ = run_command(str(file), tmp_path / "out", SELL_OFF, methods="span", primary="span")
    end = by(doc["records"], "put-calendar", 1)
    put = parse_trades("BTC-27MAR26-90000-P:1")[0].instrument
    value = 10 * price_instruments([put], load_market("deribit-20260206"))[0]["price_usd"]
    s = end["margins"]["span"]
    assert [x["instrument"] for x in end["settled"]] == ["BTC-30JAN26-90000-P"]
    assert s["initial"] == s["maintenance"] == 0.0
    assert s["nov"] == pytest.approx(value, rel=1e-12) == end["positions_value"]
    assert s["requirement"] == pytest.approx(s["maintenance"] + s["nov"], rel=1e-15)
    assert s["excess"] == pytest.approx(end["collateral"] + end["futures_pnl"] - s["maintenance"], rel=1e-12)
    for rec in doc["records"]:  # the same identity at every step
        m = rec["margins"]["span"]
        assert m["requirement"] == pytest.approx(m["maintenance"] + m["nov"], rel=1e-15)
        assert m["initial_requirement"] == pytest.approx(m["initial"] + m["nov"], rel=1e-15)
    labels = plot_equity(doc["records"], str(tmp_path / "p.png"), ["span"])
    assert labels["put-calendar"][:2] == ["equity", "span maintenance + NOV"]


def test_plot_labels_each_status_marker_by_its_own_status(tmp_path, records):
    """A liquidation_warning marker is labelled "liquidation warning", not "margin call"."""
    rs = [dict(r) for r in records if r["account"] == "short-puts"]
    rs[0]["status"], rs[1]["status"] = "initial_breach", "liquidation_warning"
    labels = plot_equity(rs, str(tmp_path / "p.png"), ["deribit"])["short-puts"]
    assert labels == ["equity", "deribit maintenance", "initial breach (deribit)", "liquidation warning (deribit)"]
    rs[1]["status"] = "margin_call"
    labels = plot_equity(rs, str(tmp_path / "p.png"), ["deribit"])["short-puts"]
    assert labels[-1] == "margin call (deribit)"

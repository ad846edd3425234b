"""SPAN on supplied risk arrays (SPEC section 6; pmjax.measures.span_arrays): every rule hand-derived on a small
two-commodity file (scan risk, intra tiers, spot charge, inter credit with deltas not in ratio, both short option
minimum methods, NOV); pmjax's own exported arrays reproduce --method span (round trip); the SOM variants and the
intermediate figures in pmjax's own mode; bad files exit 2 naming the row and column."""

import copy
import json

import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import pmjax
from pmjax.apps.risk_file import risk_parameter_file
from pmjax.apps.supplied import supplied_margin_document, supplied_stress
from pmjax.cli.app import main
from pmjax.io.risk_parameters import contract_portfolio_from_dict, risk_parameters_from_dict

A_CALL = [-256, 289, -180, 300, -400, 150, -100, 420, -520, 60, 30, 500, -600, -20, 350, -450]  # one long call
A_FUT = [0, 0, 100, 100, -100, -100, 200, 200, -200, -200, 300, 300, -300, -300, 297, -297]     # long future
B_FUT = [0, 0, 40, 40, -40, -40, 80, 80, -80, -80, 120, 120, -120, -120, 119, -119]
B_PUT = [10, -8, -30, -20, 60, 45, -50, -40, 95, 80, -70, -60, 130, 110, -90, 150]


def file_doc(som_method="max"):
    return {
        "currency": "USD",
        "commodities": {"TF": {"intra_spread_charge": 50.0, "spot_charge": 7.0, "short_option_minimum": 12.0,
                               "som_method": som_method},
                        "RF": {"intra_spread_charge": 20.0, "spot_charge": 0.0, "short_option_minimum": 5.0}},
        "contracts": [
            {"id": "TF-C", "commodity": "TF", "type": "call", "tier": 1, "spot_month": True, "delta": 0.55,
             "price": 38.5, "risk_array": A_CALL},
            {"id": "TF-F1", "commodity": "TF", "type": "future", "tier": 1, "spot_month": False, "delta": 1.0,
             "risk_array": A_FUT},
            {"id": "TF-F2", "commodity": "TF", "type": "future", "tier": 2, "spot_month": False, "delta": 0.98,
             "risk_array": [0.98 * x for x in A_FUT]},
            {"id": "TF-P", "commodity": "TF", "type": "put", "tier": 1, "spot_month": False, "delta": -0.3,
             "price": 12.0, "risk_array": [-x / 2 for x in A_CALL]},
            {"id": "RF-F", "commodity": "RF", "type": "future", "tier": 1, "spot_month": False, "delta": 1.0,
             "risk_array": B_FUT},
            {"id": "RF-P", "commodity": "RF", "type": "put", "tier": 1, "spot_month": False, "delta": -0.4,
             "price": 9.0, "risk_array": B_PUT},
        ],
        "inter_spreads": [{"legs": {"TF": 1.0, "RF": 2.0}, "credit_rate": 0.6}],
    }


def margin(positions, doc=None):
    rp = risk_parameters_from_dict(doc or file_doc(), source="test.yaml")
    cp = contract_portfolio_from_dict({"positions": [{"contract": c, "quantity": q} for c, q in positions]}, rp,
                                      source="book")
    return supplied_margin_document(cp, rp, dtype=jnp.float64)["span"]


def hand(positions, doc):
    """SPEC sections 5 and 6 by hand, in numpy: per commodity figures and the total."""
    contracts = {c["id"]: c for c in doc["contracts"]}
    names = list(doc["commodities"])
    out = {}
    ra = {n: np.zeros(16) for n in names}
    tiers = {n: {} for n in names}
    near = dict.fromkeys(names, 0.0)
    calls = dict.fromkeys(names, 0.0)
    puts = dict.fromkeys(names, 0.0)
    nov = 0.0
    for cid, q in positions:
        c = contracts[cid]
        n = c["commodity"]
        ra[n] += q * np.asarray(c["risk_array"], float)
        tiers[n][c["tier"]] = tiers[n].get(c["tier"], 0.0) + q * c["delta"]
        if c["spot_month"]:
            near[n] += q * c["delta"]
        if c["type"] == "call" and q < 0:
            calls[n] -= q
        if c["type"] == "put" and q < 0:
            puts[n] -= q
        if c["type"] in ("call", "put") and c.get("price") is not None:
            nov += q * c["price"]
    delta = {}
    for n in names:
        cm = doc["commodities"][n]
        scan = max(0.0, ra[n].max())
        w = int(ra[n].argmax())
        d1, d2 = tiers[n].get(1, 0.0), tiers[n].get(2, 0.0)
        spreads = min(abs(d1), abs(d2)) if d1 * d2 < 0 else 0.0
        delta[n] = d1 + d2  # intra spreads net to zero
        time = (ra[n][0] + ra[n][1]) / 2
        vol = 0.0 if w >= 14 else (ra[n][w] - ra[n][w ^ 1]) / 2
        som_n = calls[n] + puts[n] if cm.get("som_method") == "gross" else max(calls[n], puts[n])
        out[n] = {"scan_risk": scan, "worst_scenario": w + 1, "intra_spread": spreads * cm["intra_spread_charge"],
                  "spot_charge": abs(near[n]) * cm["spot_charge"], "time_risk": time, "volatility_risk": vol,
                  "price_risk": max(scan - time - vol, 0.0), "short_option_minimum": cm["short_option_minimum"] * som_n,
                  "inter_credit": 0.0}
    (a, b), (ra_, rb_) = list(doc["inter_spreads"][0]["legs"]), list(doc["inter_spreads"][0]["legs"].values())
    rate = doc["inter_spreads"][0]["credit_rate"]
    if delta[a] * delta[b] < 0:
        n_sp = min(abs(delta[a]) / ra_, abs(delta[b]) / rb_)
        out[a]["inter_credit"] = n_sp * ra_ * out[a]["price_risk"] / abs(delta[a]) * rate
        out[b]["inter_credit"] = n_sp * rb_ * out[b]["price_risk"] / abs(delta[b]) * rate
    risk = 0.0
    for n, f in out.items():
        f["risk"] = max(f["scan_risk"] + f["intra_spread"] + f["spot_charge"] - f["inter_credit"],
                        f["short_option_minimum"])
        risk += f["risk"]
    return out, risk, nov, max(risk - nov, 0.0)


BOOK = [("TF-C", -2), ("TF-F1", 3), ("TF-F2", -1.5), ("TF-P", -3), ("RF-F", -4), ("RF-P", 2)]


@pytest.mark.parametrize("som_method", ["max", "gross"])
def test_every_rule_by_hand(som_method):
    doc = file_doc(som_method)
    got = margin(BOOK, doc)
    want, risk, nov, total = hand(BOOK, doc)
    # the book exercises each rule: an intra spread, a spot charge, an inter credit with deltas 1.23/-4.8 against
    # legs 1:2 (not in ratio), and short calls 2 against short puts 3
    assert want["TF"]["intra_spread"] > 0 and want["TF"]["spot_charge"] > 0 and want["TF"]["inter_credit"] > 0
    for n in ("TF", "RF"):
        for k, v in want[n].items():
            assert got["by_underlying"][n][k] == pytest.approx(v, rel=1e-12, abs=1e-9), (n, k)
        assert got["by_underlying"][n]["risk_array"] == pytest.approx(
            list(sum(q * np.asarray(c["risk_array"]) for cid, q in BOOK for c in doc["contracts"]
                     if c["id"] == cid and c["commodity"] == n)), rel=1e-12)
    assert got["risk"] == pytest.approx(risk, rel=1e-12)
    assert got["nov"] == pytest.approx(nov, rel=1e-12)
    assert got["total"] == pytest.approx(total, rel=1e-12)


def test_som_methods_differ_as_stated():
    """Short 2 calls and 3 puts: max charges 3 short options, gross 5."""
    short = [("TF-C", -2), ("TF-P", -3)]
    assert margin(short, file_doc("max"))["by_underlying"]["TF"]["short_option_minimum"] == pytest.approx(3 * 12.0)
    assert margin(short, file_doc("gross"))["by_underlying"]["TF"]["short_option_minimum"] == pytest.approx(5 * 12.0)


def test_batch_equals_single():
    rp = risk_parameters_from_dict(file_doc(), source="test.yaml")
    books = [BOOK, BOOK[:2], [("RF-P", -7)]]
    cps = [contract_portfolio_from_dict({"positions": [{"contract": c, "quantity": q} for c, q in b]}, rp,
                                        source=f"b{i}") for i, b in enumerate(books)]
    batch = supplied_stress(cps, rp)
    for cp, s in zip(cps, batch):
        one = supplied_margin_document(cp, rp)["span"]
        assert s["total"] == pytest.approx(one["total"], rel=1e-13)
        for n in one["by_underlying"]:
            assert s["by_underlying"][n]["risk"] == pytest.approx(one["by_underlying"][n]["risk"], rel=1e-13)


# ------------------------------------------------------------------------------------------ round trip

ROUND_TRIP = ("BTC-30JAN26-100000-C:-2,BTC-27MAR26-80000-P:1.5,ETH-30JAN26-3000-P:-5,ETH-PERPETUAL:3,BTC-27MAR26:-0.3,"
              "BTC-9JAN26-90000-C:1,ETH-5JAN26-3000-C:-2,ETH-27MAR26:4,BTC-5JAN26-88000-P:-1")


@pytest.mark.parametrize("ext, gross", [(".json", False), (".yaml", True)])
def test_exported_arrays_reproduce_own_span(tmp_path, capsys, ext, gross):
    """pmjax stress --risk-parameter-file exports SPEC section 6; margining the same book on it gives --method span's
    figures (scan, spreads, spot charge, credits, SOM, time/vol/price risk, total) to 1e-9 relative."""
    market, config = pmjax.load_market("deribit-20260102"), pmjax.load_config()
    if gross:
        config = copy.deepcopy(config)
        for u in config["span"]["underlyings"].values():
            u["som_method"] = "gross"
    path = tmp_path / f"rp{ext}"
    risk_parameter_file(market, config, str(path))
    p = pmjax.make_portfolio(pmjax.parse_trades(ROUND_TRIP))
    own = pmjax.compute_margins(p, market, config, ["span"], dtype=jnp.float64)["span"]
    book = tmp_path / "book.yaml"
    book.write_text(yaml.safe_dump({"positions": [{"contract": x.instrument.name, "quantity": x.quantity}
                                                  for x in p.positions]}))
    assert main(["margin", str(book), "--risk-parameters", str(path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["span"]
    assert own["by_underlying"]["BTC"]["intra_spread"] > 0 and own["by_underlying"]["ETH"]["spot_charge"] > 0
    for u, fig in own["by_underlying"].items():
        for k, v in fig.items():
            assert got["by_underlying"][u][k] == pytest.approx(v, rel=1e-9, abs=1e-9), (u, k)
    for k in ("risk", "nov", "total"):
        assert got[k] == pytest.approx(own[k], rel=1e-9)


def test_own_span_gross_som_and_intermediate_figures():
    """pmjax's own SPAN: som_method gross charges every short option; time, volatility and price risk add up."""
    market, config = pmjax.load_market("deribit-20260102"), pmjax.load_config()
    p = pmjax.make_portfolio(pmjax.parse_trades("BTC-30JAN26-100000-C:-2,BTC-30JAN26-80000-P:-3"))
    mx = pmjax.compute_margins(p, market, config, ["span"], dtype=jnp.float64)["span"]["by_underlying"]["BTC"]
    cfg = copy.deepcopy(config)
    cfg["span"]["underlyings"]["BTC"]["som_method"] = "gross"
    gr = pmjax.compute_margins(p, market, cfg, ["span"], dtype=jnp.float64)["span"]["by_underlying"]["BTC"]
    rate = config["span"]["underlyings"]["BTC"]["short_option_minimum"] * market.spot("BTC")
    assert mx["short_option_minimum"] == pytest.approx(3 * rate, rel=1e-12)
    assert gr["short_option_minimum"] == pytest.approx(5 * rate, rel=1e-12)
    ra = mx["risk_array"]
    assert mx["time_risk"] == pytest.approx((ra[0] + ra[1]) / 2, rel=1e-12)
    assert mx["price_risk"] == pytest.approx(max(mx["scan_risk"] - mx["time_risk"] - mx["volatility_risk"], 0),
                                             rel=1e-12, abs=1e-9)
    bad = copy.deepcopy(config)
    bad["span"]["underlyings"]["BTC"]["som_method"] = "net"
    with pytest.raises(pmjax.InputError, match="som_method"):
        pmjax.compute_margins(p, market, bad, ["span"], dtype=jnp.float64)


# ------------------------------------------------------------------------------------------ bad files

def _write(tmp_path, doc):
    f = tmp_path / "rp.yaml"
    f.write_text(yaml.safe_dump(doc))
    b = tmp_path / "book.yaml"
    b.write_text(yaml.safe_dump({"positions": [{"contract": "TF-C", "quantity": -1}]}))
    return f, b


def _broken(change):
    doc = file_doc()
    change(doc)
    return doc


@pytest.mark.parametrize("change, needles", [
    (lambda d: d["contracts"][0].update(risk_array=A_CALL[:15]), ["contracts[0] (TF-C)", "risk_array", "15 values"]),
    (lambda d: d["contracts"][1].update(risk_array=A_FUT[:3] + [None] + A_FUT[4:]),
     ["contracts[1] (TF-F1)", "risk_array[4]", "not a number"]),
    (lambda d: d["contracts"][2].pop("risk_array"), ["contracts[2] (TF-F2)", "risk_array"]),
    (lambda d: d["contracts"][3].update(delta="n/a"), ["contracts[3] (TF-P)", "delta", "not a number"]),
    (lambda d: d["contracts"][0].update(commodity="XX"), ["contracts[0] (TF-C)", "commodity"]),
    (lambda d: d["commodities"]["TF"].update(som_method="net"), ["commodities.TF.som_method"]),
    (lambda d: d["contracts"][4].update(tier=0), ["contracts[4] (RF-F)", "tier"]),
])
def test_bad_files_exit_2_naming_row_and_column(tmp_path, capsys, change, needles):
    f, b = _write(tmp_path, _broken(change))
    assert main(["margin", str(b), "--risk-parameters", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in needles), err


def test_unknown_contract_exits_2(tmp_path, capsys):
    f, b = _write(tmp_path, file_doc())
    b.write_text(yaml.safe_dump({"positions": [{"contract": "TF-C", "quantity": 1}, {"contract": "ZZ-1", "quantity": 2}]}))
    assert main(["margin", str(b), "--risk-parameters", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "positions[1].contract" in err and "ZZ-1" in err


def test_cli_margin_stress_report(tmp_path, capsys):
    f, b = _write(tmp_path, file_doc())
    b.write_text(yaml.safe_dump({"account": "a1", "positions": [{"contract": c, "quantity": q} for c, q in BOOK]}))
    assert main(["margin", str(b), "--risk-parameters", str(f), "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["currency"] == "USD" and one["span"]["total"] == pytest.approx(hand(BOOK, file_doc())[3])
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(yaml.safe_dump({"accounts": [{"account": "a1", "positions": [
        {"contract": c, "quantity": q} for c, q in BOOK]}, {"account": "a2", "positions": [
            {"contract": "RF-P", "quantity": -1}]}]}))
    assert main(["stress", str(accounts), "--risk-parameters", str(f), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert [a["account"] for a in st["accounts"]] == ["a1", "a2"]
    assert st["accounts"][0]["span"]["total"] == pytest.approx(one["span"]["total"], rel=1e-12)
    assert main(["report", str(b), "--risk-parameters", str(f), "--out", str(tmp_path / "rep"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    html = (tmp_path / "rep" / "report.html").read_text()
    assert rep["span"]["total"] == one["span"]["total"] and "price risk" in html and "TF" in html
    assert main(["margin", str(b), "--risk-parameters", str(f), "--method", "deribit"]) == 2

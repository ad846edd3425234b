"""CME SPAN expanded unpacked (.pa2) files read by ``pmjax.io.span_pa2.load_pa2``: synthetic files built here field
by field at the columns of the published layout (docs/span_files.md), checked for the arrays (signs, decimal
locator), the composite delta (and its delta scaling factor), two products in one combined commodity, the charges
of records 3/C/4/6, currency conversion, the 83/84 wide records, every malformed line naming its line and columns,
skipped record types counted, and a book margined on the file by hand and against the same data in SPEC section
6's own layout."""

import numpy as np
import pytest

from pmjax.apps.supplied import supplied_margin_document
from pmjax.core.errors import InputError
from pmjax.io.risk_parameters import ContractPortfolio, risk_parameters_from_dict
from pmjax.io.span_pa2 import load_pa2

# ------------------------------------------------------------------------------------------ layout helper


def record(*fields, width=132):
    """A record with each ``(start, end, text)`` at 1-based inclusive columns ``start``-``end`` (the published
    layout's From/To); a text must fill its columns exactly and fields must not overlap."""
    buf = [" "] * width
    used = set()
    for start, end, text in fields:
        assert len(text) == end - start + 1, f"{text!r} does not fill columns {start}-{end}"
        for i, ch in enumerate(text):
            col = start + i
            assert col not in used, f"column {col} written twice"
            used.add(col)
            buf[col - 1] = ch
    return "".join(buf)


def num(value, width):
    """A zero-padded unsigned number of ``width`` digits."""
    text = f"{value:0{width}d}"
    assert len(text) == width
    return text


def signed(values, first, width):
    """Signed array values from column ``first``: ``width`` digits, then a sign byte, each."""
    out = []
    for k, v in enumerate(values):
        b = first + (width + 1) * k
        out += [(b, b + width - 1, num(abs(v), width)), (b + width, b + width, "-" if v < 0 else "+")]
    return out


def rec0(date="20260102", fmt="U2"):
    return record((1, 2, "0 "), (3, 8, "TST   "), (9, 16, date), (17, 17, "S"), (18, 19, "F "), (36, 37, fmt))


def rec1(exch="TST"):
    return record((1, 2, "1 "), (3, 5, exch), (8, 9, "01"))


def rec2(cc, products, exch="TST", currency="USD", style="P"):
    """products: (code, contract type, decimal locator ' ' or digit, decimal sign ' ', '+' or '-')."""
    fields = [(1, 2, "2 "), (3, 5, exch), (7, 12, cc.ljust(6)), (13, 13, "0"), (14, 16, currency), (17, 17, "$"),
              (18, 18, style), (19, 19, "N")]
    for k, (code, ctype, loc, sign) in enumerate(products):
        b = 23 + 16 * k
        fields += [(b, b + 9, code.ljust(10)), (b + 10, b + 12, ctype), (b + 13, b + 13, loc), (b + 14, b + 14, sign)]
    return record(*fields)


def key(product, ptype, right=" ", fut="202603", opt="      ", strike=0, exch="TST", under=None):
    """Columns 3-54 shared by the first and second physical risk array records."""
    return [(3, 5, exch), (6, 15, product.ljust(10)), (16, 25, (under or product).ljust(10)), (26, 28, ptype),
            (29, 29, right), (30, 35, fut), (36, 37, "  "), (39, 44, opt), (45, 46, "  "), (48, 54, num(strike, 7))]


def rec81(k, values, hp=None):
    assert len(values) == 9
    extra = [(109, 122, num(hp, 14)), (123, 123, "Y")] if hp is not None else [(123, 123, "N")]
    return record((1, 2, "81"), *k, *signed(values, 55, 5), *extra)


def rec82(k, values, delta, settle=0, iv=25000000):
    assert len(values) == 7
    return record((1, 2, "82"), *k, *signed(values, 55, 5), (97, 101, num(round(abs(delta) * 1e4), 5)),
                  (102, 102, "-" if delta < 0 else "+"), (103, 110, num(iv, 8)), (111, 117, num(settle, 7)),
                  (118, 118, "+"), (119, 119, "+"))


def pair(k, values, delta, settle=0):
    """The 81/82 records of one contract: values[0:9] on the first, values[9:16] on the second."""
    return [rec81(k, values[:9]), rec82(k, values[9:], delta, settle)]


def rec3(cc, tiers, method="10"):
    fields = [(1, 2, "3 "), (3, 8, cc.ljust(6)), (9, 10, method)]
    for k, (tier, start, end) in enumerate(tiers):
        b = 11 + 14 * k
        fields += [(b, b + 1, num(tier, 2)), (b + 2, b + 7, start), (b + 8, b + 13, end)]
    return record(*fields, (69, 72, "1000"), (73, 76, "1000"), (77, 80, "1100"))


def recC(cc, priority, rate, legs, method="10"):
    """legs: (tier, ratio, side)."""
    fields = [(1, 2, "C "), (3, 8, cc.ljust(6)), (9, 10, method), (11, 12, num(priority, 2)),
              (13, 14, num(len(legs), 2)), (15, 21, num(rate, 7))]
    for k, (tier, ratio, side) in enumerate(legs):
        b = 22 + 7 * k
        fields += [(b, b + 1, num(k + 1, 2)), (b + 2, b + 3, num(tier, 2)), (b + 4, b + 5, num(ratio, 2)),
                   (b + 6, b + 6, side)]
    return record(*fields)


def rec4(cc, month, spread_rate, outright_rate, som, som_method, method="10"):
    return record((1, 2, "4 "), (3, 8, cc.ljust(6)), (9, 10, method), (11, 12, "01"), (13, 14, "01"),
                  (15, 20, month), (21, 27, num(spread_rate, 7)), (28, 34, num(outright_rate, 7)),
                  (63, 69, num(som, 7)), (70, 72, "100"), (73, 75, "100"), (76, 78, "100"), (79, 79, som_method))


def rec6(priority, rate_pct, legs, method="01"):
    """rate_pct: the credit rate in percent; legs: (cc, delta per spread, side)."""
    fields = [(1, 2, "6 "), (3, 5, "ALL"), (6, 9, num(priority, 4)), (10, 16, num(round(rate_pct * 1e4), 7))]
    for k, (cc, ratio, side) in enumerate(legs):
        b = 17 + 18 * k
        fields += [(b, b + 2, "TST"), (b + 3, b + 3, "Y"), (b + 4, b + 9, cc.ljust(6)),
                   (b + 10, b + 16, num(round(ratio * 1e4), 7)), (b + 17, b + 17, side)]
    return record(*fields, (89, 90, method))


def recP(product, ptype, settle_dl, strike_dl, cvf, currency="USD"):
    return record((1, 2, "P "), (3, 5, "TST"), (6, 15, product.ljust(10)), (16, 18, ptype),
                  (19, 33, "TEST PRODUCT   "), (34, 36, settle_dl), (37, 39, strike_dl),
                  (42, 55, num(round(cvf * 1e7), 14)), (64, 65, "01"), (66, 68, currency), (69, 69, "$"),
                  (70, 72, "STD"), (73, 73, "+"), (74, 75, "00"), (76, 79, "AMER"))


def recB(product, ptype, fut, opt, dsf):
    return record((1, 2, "B "), (3, 5, "TST"), (6, 15, product.ljust(10)), (16, 18, ptype), (19, 24, fut),
                  (25, 26, "  "), (28, 33, opt), (34, 35, "  "), (86, 91, num(round(dsf * 1e4), 6)))


def write(tmp_path, lines, name="file.pa2"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return str(path)


# ------------------------------------------------------------------------------------------ a small file

# raw digits as published (loss positive, one long contract); TF futures carry 2 implied decimals
TF_RAW = [0, 0, 10050, 10050, -10050, -10050, 20100, 20100, -20100, -20100, 30150, 30150, -30150, -30150, 9950,
          -9950]
TF2_RAW = [round(0.98 * x) for x in TF_RAW]
CALL = [-256, 289, -180, 300, -400, 150, -100, 420, -520, 60, 30, 500, -600, -20, 350, -450]
PUT = [128, -144, 90, -150, 200, -75, 50, -210, 260, -30, -15, -250, 300, 10, -175, 225]
RF_RAW = [0, 0, 40, 40, -40, -40, 80, 80, -80, -80, 120, 120, -120, -120, 119, -119]
RF_PUT = [10, -8, -30, -20, 60, 45, -50, -40, 95, 80, -70, -60, 130, 110, -90, 150]

ID = {"TF1": "TST:TF:202603", "TF2": "TST:TF:202606", "C": "TST:TFO:202603:202602:2.5C",
      "P": "TST:TFO:202603:202602:2.5P", "RF": "TST:RF:202603", "RP": "TST:RFO:202603:202602:95P"}


def lines(extra=()):
    return [
        rec0(), rec1(),
        rec2("TF", [("TF", "FUT", "2", "+"), ("TFO", "OOF", " ", " ")]),
        rec3("TF", [(1, "202603", "202603"), (2, "202604", "202612")]),
        recC("TF", 1, 50, [(1, 1, "A"), (2, 1, "B")]),
        rec4("TF", "202603", 7, 7, 12, "1"),
        rec2("RF", [("RF", "FUT", " ", " "), ("RFO", "OOF", " ", " ")]),
        rec4("RF", "202509", 0, 0, 5, "2"),
        record((1, 2, "5 "), (3, 5, "ALL"), (13, 18, "TF    "), (19, 24, "RF    ")),
        rec6(1, 60.0, [("TF", 1.0, "A"), ("RF", 2.0, "B")]),
        recP("TFO", "OOF", "002", "002", 1.0), recP("RFO", "OOF", "001", "000", 1.0),
        record((1, 2, "S "), (3, 8, "TF    "), (9, 10, "01"), (11, 12, "01")),
        *pair(key("TF", "FUT"), TF_RAW, 1.0),
        *pair(key("TF", "FUT", fut="202606"), TF2_RAW, 0.98),
        *pair(key("TFO", "OOF", "C", opt="202602", strike=250, under="TF"), CALL, 0.55, settle=3850),
        *pair(key("TFO", "OOF", "P", opt="202602", strike=250, under="TF"), PUT, -0.3, settle=1200),
        *pair(key("RF", "FUT"), RF_RAW, 1.0),
        *pair(key("RFO", "OOF", "P", opt="202602", strike=95, under="RF"), RF_PUT, -0.4, settle=90),
        record((1, 2, "V "), (3, 5, "TST"), (6, 15, "TF        ")),
        *extra,
    ]


def spec_doc():
    """The same file in SPEC section 6's own layout, by hand."""
    c = lambda cid, cc, kind, tier, spot, delta, price, arr: {  # noqa: E731
        "id": ID[cid], "commodity": cc, "type": kind, "tier": tier, "spot_month": spot, "delta": delta,
        "price": price, "risk_array": arr}
    return {"currency": "USD",
            "commodities": {"TF": {"intra_spread_charge": 50.0, "spot_charge": 7.0, "short_option_minimum": 12.0,
                                   "som_method": "max"},
                            "RF": {"intra_spread_charge": 0.0, "spot_charge": 0.0, "short_option_minimum": 5.0,
                                   "som_method": "gross"}},
            "contracts": [c("TF1", "TF", "future", 1, True, 1.0, None, [x / 100 for x in TF_RAW]),
                          c("TF2", "TF", "future", 2, False, 0.98, None, [x / 100 for x in TF2_RAW]),
                          c("C", "TF", "call", 1, True, 0.55, 38.5, CALL),
                          c("P", "TF", "put", 1, True, -0.3, 12.0, PUT),
                          c("RF", "RF", "future", 1, False, 1.0, None, RF_RAW),
                          c("RP", "RF", "put", 1, False, -0.4, 9.0, RF_PUT)],
            "inter_spreads": [{"legs": {"TF": 1.0, "RF": 2.0}, "credit_rate": 0.6}]}


def span(rp, positions):
    cp = ContractPortfolio("acct", [(ID.get(c, c), q) for c, q in positions], "book")
    return supplied_margin_document(cp, rp)["span"]


def raises(path, *needles):
    with pytest.raises(InputError) as e:
        load_pa2(path)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))
    return str(e.value)


# ------------------------------------------------------------------------------------------ reading


def test_helper_places_fields_at_their_columns():
    r = rec81(key("TF", "FUT"), TF_RAW[:9])
    assert r[:2] == "81" and r[2:5] == "TST" and r[25:28] == "FUT" and r[29:35] == "202603"
    assert r[54:59] == "00000" and r[59] == "+" and r[66:71] == "10050" and r[71] == "+"  # array value 3: 67-72
    assert r[102:107] == "20100" and r[107] == "-"  # array value 9: columns 103-108
    r2 = rec82(key("TF", "FUT"), TF_RAW[9:], -0.5661, settle=1234567)
    assert r2[96:101] == "05661" and r2[101] == "-" and r2[110:117] == "1234567"


def test_arrays_signs_and_decimal_locator(tmp_path):
    rp = load_pa2(write(tmp_path, lines()))
    fut = rp.contracts[ID["TF1"]]
    assert fut.risk_array == pytest.approx([x / 100 for x in TF_RAW], rel=1e-15)  # locator 2 '+': 2 decimals
    assert fut.risk_array[2] == 100.5 and fut.risk_array[4] == -100.5 and fut.risk_array[15] == -99.5
    assert len(fut.risk_array) == 16
    assert rp.contracts[ID["C"]].risk_array == tuple(float(x) for x in CALL)  # blank locator: whole units
    assert rp.contracts[ID["RP"]].risk_array == tuple(float(x) for x in RF_PUT)


def test_negative_decimal_locator_multiplies(tmp_path):
    """A decimal sign '-' makes the locator negative: values are in units of 10**locator."""
    ls = [rec2("XX", [("XF", "FUT", "1", "-")]), *pair(key("XF", "FUT"), TF_RAW, 1.0)]
    rp = load_pa2(write(tmp_path, ls))
    assert rp.contracts["TST:XF:202603"].risk_array == tuple(10.0 * x for x in TF_RAW)


def test_composite_delta_and_delta_scaling_factor(tmp_path):
    rp = load_pa2(write(tmp_path, lines()))
    assert rp.contracts[ID["C"]].delta == pytest.approx(0.55, rel=1e-15)
    assert rp.contracts[ID["P"]].delta == pytest.approx(-0.3, rel=1e-15)
    assert rp.contracts[ID["TF2"]].delta == pytest.approx(0.98, rel=1e-15)
    # a B record's delta scaling factor multiplies the composite delta of its contract (and only that one)
    rp = load_pa2(write(tmp_path, lines([recB("RFO", "OOF", "202603", "202602", 0.5),
                                         recB("RF", "FUT", "202603", "      ", 2.0)])))
    assert rp.contracts[ID["RP"]].delta == pytest.approx(-0.2, rel=1e-15)
    assert rp.contracts[ID["RF"]].delta == pytest.approx(2.0, rel=1e-15)
    assert rp.contracts[ID["C"]].delta == pytest.approx(0.55, rel=1e-15)
    assert rp.notes["delta_scaled_contracts"] == 2


def test_two_products_in_one_commodity(tmp_path):
    rp = load_pa2(write(tmp_path, lines()))
    assert list(rp.commodities) == ["TF", "RF"]
    tf = {cid: c for cid, c in rp.contracts.items() if c.commodity == "TF"}
    assert sorted(tf) == sorted([ID["TF1"], ID["TF2"], ID["C"], ID["P"]])
    assert [tf[ID[k]].type for k in ("TF1", "TF2", "C", "P")] == ["future", "future", "call", "put"]
    # the two products keep their own decimal locators inside the one combined commodity
    assert tf[ID["TF1"]].risk_array[2] == 100.5 and tf[ID["C"]].risk_array[3] == 300.0
    # tiers from the type 3 record, spot month from the type 4 record
    assert [tf[ID[k]].tier for k in ("TF1", "TF2", "C")] == [1, 2, 1]
    assert tf[ID["TF1"]].spot_month and not tf[ID["TF2"]].spot_month
    # option price for NOV: settlement 3850 x 10**-2 (P record) x contract value factor 1
    assert tf[ID["C"]].price == pytest.approx(38.5, rel=1e-15) and tf[ID["TF1"]].price is None


def test_charges_tiers_and_spreads(tmp_path):
    rp = load_pa2(write(tmp_path, lines()))
    assert rp.currency == "USD" and rp.notes["as_of"] == "2026-01-02"
    assert rp.commodities["TF"] == {"intra_spread_charge": 50.0, "spot_charge": 7.0, "short_option_minimum": 12.0,
                                    "som_method": "max"}
    assert rp.commodities["RF"] == {"intra_spread_charge": 0.0, "spot_charge": 0.0, "short_option_minimum": 5.0,
                                    "som_method": "gross"}
    assert rp.inter_spreads == [(("TF", "RF"), (1.0, 2.0), pytest.approx(0.6, rel=1e-15))]


def test_skipped_records_counted_by_type(tmp_path):
    rp = load_pa2(write(tmp_path, lines()))
    assert rp.notes["skipped_records"] == {"5": 1, "S": 1, "V": 1}
    assert "tiered_scanning_not_modelled" not in rp.notes  # the S record says 01: non-tiered
    tiered = record((1, 2, "S "), (3, 8, "RF    "), (9, 10, "21"), (11, 12, "02"))
    rp = load_pa2(write(tmp_path, lines([tiered])))
    assert rp.notes["tiered_scanning_not_modelled"] == {"RF": "21"} and rp.notes["skipped_records"]["S"] == 2
    # charges for a combined commodity the file does not define are listed, not dropped silently
    rp = load_pa2(write(tmp_path, lines([rec4("ZZ", "202603", 1, 1, 1, "1")])))
    assert rp.notes["records_for_unknown_commodities"] == {"4": ["ZZ"]} and list(rp.commodities) == ["TF", "RF"]
    assert rp.notes["records_read"]["81"] == 6 and rp.notes["records_read"]["82"] == 6


def test_trailing_blanks_may_be_omitted(tmp_path):
    """Published files end each record at its last non-blank field: blank optional fields past the end of the
    line read as blank."""
    a = load_pa2(write(tmp_path, lines(), "padded.pa2"))
    b = load_pa2(write(tmp_path, [x.rstrip() for x in lines()], "stripped.pa2"))
    assert a.contracts == b.contracts and a.commodities == b.commodities and a.inter_spreads == b.inter_spreads


def test_wide_records_83_84(tmp_path):
    big = [v * 1000 for v in CALL]  # beyond 5 digits
    k = key("TFO", "OOF", "C", opt="202602", strike=250, under="TF")
    r83 = record((1, 2, "83"), *k, *signed(big[:9], 55, 8), (150, 150, "N"), width=150)
    r84 = record((1, 2, "84"), *k, *signed(big[9:], 55, 8), (118, 122, "05500"), (123, 123, "+"),
                 (132, 138, num(3850, 7)), (139, 139, "+"), width=171)
    ls = [rec2("TF", [("TFO", "OOF", "3", "+")]), recP("TFO", "OOF", "002", "002", 1.0), r83, r84]
    c = load_pa2(write(tmp_path, ls)).contracts[ID["C"]]
    assert c.risk_array == pytest.approx([x / 1000 for x in big], rel=1e-15)
    assert c.delta == pytest.approx(0.55) and c.price == pytest.approx(38.5)


def test_other_currency_converted_by_type_T(tmp_path):
    ls = lines([rec2("EU", [("EF", "FUT", " ", " ")], currency="EUR"), *pair(key("EF", "FUT"), RF_RAW, 1.0),
                record((1, 2, "T "), (3, 5, "EUR"), (6, 6, "E"), (7, 9, "USD"), (10, 10, "$"),
                       (11, 20, num(1_100_000, 10)))])
    rp = load_pa2(write(tmp_path, ls))
    assert rp.currency == "USD"
    assert rp.contracts["TST:EF:202603"].risk_array == pytest.approx([1.1 * x for x in RF_RAW], rel=1e-15)
    assert rp.notes["converted_currencies"] == ["EUR"]
    raises(write(tmp_path, ls[:-1], "nofx.pa2"), "columns 14-16", "no type T record converts EUR to USD")


def test_unmodelled_spreads_are_listed(tmp_path):
    ls = lines([recC("TF", 2, 30, [(1, 1, "A"), (2, 2, "B"), (3, 1, "A")]),
                rec6(2, 50.0, [("TF", 1.0, "A"), ("RF", 1.0, "B")], method="04")])
    rp = load_pa2(write(tmp_path, ls))
    assert rp.commodities["TF"]["intra_spread_charge"] == 50.0
    assert [s["priority"] for s in rp.notes["intra_spreads_not_modelled"]] == [2]
    assert [s["priority"] for s in rp.notes["inter_spreads_not_modelled"]] == [2]
    assert len(rp.inter_spreads) == 1


# ------------------------------------------------------------------------------------------ malformed lines


def test_malformed_array_value_names_line_and_columns(tmp_path):
    ls = lines()
    i = next(j for j, x in enumerate(ls) if x.startswith("81") and "TFO" in x)
    ls[i] = ls[i][:66] + "12a45" + ls[i][71:]  # array value 3: columns 67-71
    msg = raises(write(tmp_path, ls), f"line {i + 1}", "columns 67-71", "array value 3", "not a number")
    assert "file.pa2" in msg


def test_malformed_sign_names_its_column(tmp_path):
    ls = lines()
    i = next(j for j, x in enumerate(ls) if x.startswith("82"))
    ls[i] = ls[i][:59] + "*" + ls[i][60:]  # sign of array value 10: column 60
    raises(write(tmp_path, ls), f"line {i + 1}", "column 60", "sign for array value 10")


def test_short_line_is_an_error(tmp_path):
    ls = lines()
    i = next(j for j, x in enumerate(ls) if x.startswith("81"))
    ls[i] = ls[i][:100]  # array value 8 needs columns 97-101
    raises(write(tmp_path, ls), f"line {i + 1}", "columns 97-101", "line too short")
    ls = lines()
    i = next(j for j, x in enumerate(ls) if x.startswith("82"))
    ls[i] = ls[i][:96]  # the composite delta needs columns 97-101
    raises(write(tmp_path, ls), f"line {i + 1}", "columns 97-101", "composite delta", "line too short")


def test_unpaired_and_unknown_arrays(tmp_path):
    base = lines()
    i = next(j for j, x in enumerate(base) if x.startswith("82"))
    raises(write(tmp_path, base[:i] + base[i + 1:]), f"line {i}", "without its")  # an 81 with no 82
    ls = list(base)
    ls[i] = ls[i][:29] + "202609" + ls[i][35:]  # the 82 names another futures month
    raises(write(tmp_path, ls), f"line {i + 1}", "columns 3-54", "differs")
    ls = lines([*pair(key("ZZ", "FUT"), RF_RAW, 1.0)])
    raises(write(tmp_path, ls), "columns 3-28", "in no combined commodity")
    ls = lines([*pair(key("RF", "FUT"), RF_RAW, 1.0)])
    raises(write(tmp_path, ls), "columns 3-54", "appears twice")


def test_other_malformed_records(tmp_path):
    raises(write(tmp_path, [rec0(fmt="UP"), *lines()[1:]]), "line 1", "columns 36-37", "Paris")
    ls = lines()
    ls[2] = ls[2][:35] + "x" + ls[2][36:]  # the first product's decimal locator: column 36
    raises(write(tmp_path, ls), "line 3", "column 36", "decimal locator")
    ls = lines()
    ls[3] = ls[3][:12] + "2026xx" + ls[3][18:]  # tier 1 starting month: columns 13-18
    raises(write(tmp_path, ls), "line 4", "columns 13-18", "not a month")
    raises(write(tmp_path, lines()[:9]), "no risk array records")


# ------------------------------------------------------------------------------------------ margining


BOOK = [("TF1", 3), ("TF2", -1.5), ("C", -2), ("P", -3), ("RF", -4), ("RP", 2)]


def test_scan_risk_by_hand(tmp_path):
    """Long 2 TF futures, short 3 TF calls: the combined commodity's array is 2 F - 3 C, its scan risk the
    largest loss."""
    rp = load_pa2(write(tmp_path, lines()))
    got = span(rp, [("TF1", 2), ("C", -3)])["by_underlying"]["TF"]
    want = [2 * f / 100 - 3 * c for f, c in zip(TF_RAW, CALL)]
    assert got["risk_array"] == pytest.approx(want, rel=1e-12)
    # scenario 14 (futures down 3/3, vol down): 2 x (-301.50) - 3 x (-20) = -543; the largest loss is scenario 13:
    # 2 x (-301.50) - 3 x (-600) = 1197
    assert got["scan_risk"] == pytest.approx(1197.0, rel=1e-12) and got["worst_scenario"] == 13


def test_book_matches_spec_section_6_layout(tmp_path):
    """Every figure of a book that exercises each rule (intra spread between tiers, spot charge, SOM max and
    gross, inter credit, NOV) equals the same data written in SPEC section 6's layout."""
    rp = load_pa2(write(tmp_path, lines()))
    ref = risk_parameters_from_dict(spec_doc(), source="spec.yaml")
    assert rp.contracts.keys() == ref.contracts.keys()
    for cid, c in ref.contracts.items():
        got = rp.contracts[cid]
        assert (got.commodity, got.type, got.tier, got.spot_month) == (c.commodity, c.type, c.tier, c.spot_month)
        assert got.delta == pytest.approx(c.delta, rel=1e-15)
        assert np.allclose(got.risk_array, c.risk_array, rtol=1e-15, atol=0)
        if c.price is None:
            assert got.price is None
        else:
            assert got.price == pytest.approx(c.price, rel=1e-15)
    a, b = span(rp, BOOK), span(ref, BOOK)
    tf = a["by_underlying"]["TF"]
    assert tf["intra_spread"] > 0 and tf["spot_charge"] > 0 and tf["inter_credit"] > 0
    assert tf["short_option_minimum"] == pytest.approx(3 * 12.0)  # max(2 short calls, 3 short puts)
    for n in ("TF", "RF"):
        for k, v in b["by_underlying"][n].items():
            assert a["by_underlying"][n][k] == pytest.approx(v, rel=1e-12, abs=1e-9), (n, k)
    nov = -2 * 38.5 - 3 * 12.0 + 2 * 9.0
    assert a["nov"] == pytest.approx(nov, rel=1e-12)
    for k in ("risk", "nov", "total"):
        assert a[k] == pytest.approx(b[k], rel=1e-12)


def test_cli_margin_on_a_pa2_file(tmp_path, capsys):
    """pmjax margin --risk-parameters FILE.pa2: the same figures as the Python path; a malformed line exits 2 naming
    the line and columns."""
    import json

    import yaml

    from pmjax.cli.app import main

    path = write(tmp_path, lines())
    book = tmp_path / "book.yaml"
    book.write_text(yaml.safe_dump({"positions": [{"contract": ID["TF1"], "quantity": 2},
                                                  {"contract": ID["C"], "quantity": -3}]}))
    assert main(["margin", str(book), "--risk-parameters", path, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["span"]["by_underlying"]["TF"]["scan_risk"] == pytest.approx(1197.0, rel=1e-12)
    bad = lines()
    i = next(j for j, ln in enumerate(bad) if ln.startswith("81"))
    bad[i] = bad[i][:66] + "12a45" + bad[i][71:]
    assert main(["margin", str(book), "--risk-parameters", write(tmp_path, bad, "bad.pa2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "line" in err and "columns 67-71" in err and "not a number" in err

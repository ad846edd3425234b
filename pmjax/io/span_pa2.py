"""CME's SPAN risk parameter file in the expanded unpacked positional format (``.pa2``) as ``RiskParameters``.

``load_pa2(path)`` reads the subset of the published layout ("Risk Parameter File Layouts for the Positional
Formats", expanded format; docs/span_files.md gives the sources, every record and column read, and what is not
read) that maps onto SPEC section 6:

- ``0`` exchange complex header (business date -> ``notes["as_of"]``; a Paris-expanded file, format ``UP``, is
  refused), ``1`` exchange header, ``T`` currency conversion rates;
- ``2`` combined commodity: code, performance-bond currency, option margin style, and the products it holds with
  their contract type and risk-array decimal locator;
- ``81``/``82`` (and the wide ``83``/``84``) risk arrays: the 16 values with their signs, scaled by the product's
  decimal locator (loss positive, one long contract, extremes already weighted, as published), the SPAN composite
  delta, the settlement price;
- ``P`` price conversion (settlement/strike decimal locators, contract value factor: strike in the contract id,
  option price for NOV), ``B`` array parameters (only the delta scaling factor, applied to the composite delta);
- ``3`` intracommodity tiers and ``C`` tier-to-tier spread charges, ``4`` delivery (spot) months, spot charge and
  short option minimum, ``6`` intercommodity spreads - where they fit SPEC section 6's rules; what does not fit is
  listed in ``notes`` (``intra_spreads_not_modelled``, ``inter_spreads_not_modelled``, ...), never dropped silently;
  a type ``S`` record with tiered scanning (not modelled: one scan per commodity) is named in
  ``notes["tiered_scanning_not_modelled"]``.

Contract ids: ``{exchange}:{product}:{futures month}`` for futures, combinations and physicals, and
``{exchange}:{product}:{futures month}:{option month}:{strike}{C|P}`` for options; a month is ``CCYYMM`` followed by
the record's day or week code when it has one (``20250919``, ``202509W3``), the strike is scaled by the product's
strike decimal locator (``P`` record) and printed without trailing zeros. Every malformed line is an ``InputError``
naming the file and line (``source``) and the columns (``field``); record types not read are counted by type in
``notes["skipped_records"]``.
"""

from __future__ import annotations

import collections
import os
from decimal import Decimal

from pmjax.core.errors import InputError
from pmjax.io.risk_parameters import Contract, RiskParameters, load_risk_parameters
from pmjax.io.span_pa2_records import (  # noqa: F401  (READ_RECORDS, TIERED_SCANNING re-exported)
    KINDS, OPTION_TYPES, READ_RECORDS, TIERED_SCANNING, Line, RecordFile, plain, scaled_value,
)


def _currency(f: RecordFile) -> tuple[str, dict[str, float]]:
    """The file's currency (the first combined commodity's) and each commodity's conversion into it (type T)."""
    if not f.commodities:
        raise InputError("no combined commodity (type 2) records", source=f.path)
    base = next(iter(f.commodities.values())).currency
    rates = {}
    for cc, c in f.commodities.items():
        rates[cc] = _fx(f, c.currency, base)
        if rates[cc] is None:
            raise c.line.error(14, 16, "performance bond currency ISO code",
                               f"{cc} is in {c.currency}, the file's currency is {base} (the first combined "
                               f"commodity's) and no type T record converts {c.currency} to {base}")
    return base, rates


def _fx(f: RecordFile, src: str, dst: str) -> float | None:
    if src == dst:
        return 1.0
    if (src, dst) in f.fx:
        return f.fx[(src, dst)]
    if (dst, src) in f.fx:
        return 1.0 / f.fx[(dst, src)]
    return None


def _tier(f: RecordFile, cc: str, month: str) -> int | None:
    for tier, start, end in f.tiers.get(cc, ()):
        if month and start <= month <= end:
            return tier
    return None


def _values(ln: Line, first_value: int, count: int, width: int, offset: int) -> list[int]:
    """``count`` signed array values from column ``first_value``: ``width`` digits then a sign byte each."""
    out = []
    for k in range(count):
        b = first_value + (width + 1) * k
        name = f"array value {offset + k}"
        v = ln.unsigned(b, b + width - 1, name, required=True)
        out.append(ln.sign(b + width, f"sign for {name}") * v)
    return out


def _kind(ln: Line, ptype: str, right: str, notes: dict) -> str:
    """call, put, or the kind of a product type (FUT/CMB: future, PHY: spot; others read as futures, noted)."""
    if right in ("C", "P"):
        return "call" if right == "C" else "put"
    if right:
        raise ln.error(29, 29, "option right code", f"must be C, P or blank, got {right!r}")
    if ptype in OPTION_TYPES:
        raise ln.error(29, 29, "option right code", f"an option ({ptype}) needs C or P")
    if ptype not in KINDS:
        notes.setdefault("product_types_read_as_future", collections.Counter())[ptype or "(blank)"] += 1
    return KINDS.get(ptype, "future")


def _settlement(ln: Line, ln2: Line, width: int, cd_col: int) -> tuple[int | None, int]:
    """(settlement price digits, sign): the high-precision field of the first record when its flag is Y, else
    the second record's."""
    hp_col = 55 + 9 * (width + 1)  # 109 (81) or 136 (83)
    if ln.code(hp_col + 14, hp_col + 14, "high-precision settlement price flag") == "Y":
        return ln.unsigned(hp_col, hp_col + 13, "high-precision settlement price", required=True), 1
    return ln2.unsigned(cd_col + 14, cd_col + 20, "settlement price"), ln2.sign(cd_col + 21, "sign for settlement price")


def _contracts(f: RecordFile, rates: dict[str, float], notes: dict) -> dict[str, Contract]:
    contracts: dict[str, Contract] = {}
    lines: dict[str, int] = {}
    untiered: collections.Counter = collections.Counter()
    unpriced: collections.Counter = collections.Counter()
    scaled = 0
    delivery = {cc: _delivery_months(ln) for cc, ln in f.delivery.items()}
    for a in f.arrays:
        ln, ln2 = a.first, a.second
        exchange = ln.code(3, 5, "exchange acronym", required=True)
        product = ln.code(6, 15, "product code", required=True)
        ptype = ln.code(26, 28, "product type code")
        right = ln.code(29, 29, "option right code")
        fut = ln.month(30, 35, "futures contract month") + ln.code(36, 37, "futures contract day or week code")
        opt = ln.month(39, 44, "option contract month") + ln.code(45, 46, "option contract day or week code")
        strike_raw = ln.unsigned(48, 54, "option strike price", default=0)
        prod = f.products.get((exchange, product, ptype)) or f.products.get((exchange, product, ""))
        if prod is None:
            raise ln.error(3, 28, "exchange, product code, product type",
                           f"product {product} {ptype or '(no type)'} of {exchange} is in no combined commodity "
                           "(type 2 record)")
        cc = prod.commodity
        kind = _kind(ln, ptype, right, notes)
        # the 16 values: 9 on the first record, 7 on the second; 5 digits (81/82) or 8 (83/84)
        width = 8 if a.wide else 5
        raw = _values(ln, 55, 9, width, 1) + _values(ln2, 55, 7, width, 10)
        fx = rates[cc]
        array = tuple(scaled_value(v, prod.decimals) * fx for v in raw)
        cd_col = 55 + 7 * (width + 1)  # 97 (82) or 118 (84)
        delta = ln2.sign(cd_col + 5, "sign for composite delta") * scaled_value(
            ln2.unsigned(cd_col, cd_col + 4, "SPAN composite delta 9V9(4)", required=True), 4)
        bkey = (exchange, product, ptype, fut, opt if kind in ("call", "put") else "")
        if bkey in f.scaling:
            delta *= f.scaling[bkey]
            scaled += f.scaling[bkey] != 1.0
        price_info = f.prices.get((exchange, product, ptype))
        # contract id
        strike_sign = ln2.sign(cd_col + 22, "sign for strike price")
        if kind in ("call", "put"):
            strike = Decimal(strike_raw).scaleb(-(price_info.strike_decimals if price_info else 0)) * strike_sign
            cid = f"{exchange}:{product}:{fut}:{opt}:{plain(strike)}{right}"
        else:
            cid = f"{exchange}:{product}:{fut}" if fut else f"{exchange}:{product}"
        if cid in contracts:
            raise ln.error(3, 54, "contract key", f"contract {cid} appears twice (first on line {lines[cid]})")
        settle, settle_sign = _settlement(ln, ln2, width, cd_col)
        price = None
        if kind in ("call", "put"):
            pfx = _fx(f, price_info.currency or f.commodities[cc].currency,
                      f.commodities[cc].currency) if price_info else None
            if price_info is None or settle is None or pfx is None or not f.commodities[cc].premium_style:
                unpriced[cc] += 1
            else:
                price = settle_sign * scaled_value(settle, price_info.settle_decimals) * price_info.value_factor * pfx * fx
        tier = 1
        if f.tiers.get(cc):
            t = _tier(f, cc, (fut or opt)[:6])
            if t is None:
                untiered[cc] += 1
            else:
                tier = t
        spot = bool(fut) and fut[:6] in delivery.get(cc, ())
        contracts[cid] = Contract(cid, cc, kind, tier, spot, delta, price, array)
        lines[cid] = ln.number
    if untiered:
        notes["contracts_in_no_tier"] = dict(untiered)  # margined in tier 1
    if unpriced:
        notes["options_without_price"] = dict(unpriced)  # no P record, no settlement or futures-style: NOV 0
    if scaled:
        notes["delta_scaled_contracts"] = scaled
    if "product_types_read_as_future" in notes:
        notes["product_types_read_as_future"] = dict(notes["product_types_read_as_future"])
    return contracts


def _delivery_months(ln: Line) -> tuple[str, ...]:
    if ln.code(9, 10, "delivery (spot) charge method code") != "10":
        return ()
    n = ln.unsigned(11, 12, "number of contract months in delivery", default=0)
    months = [ln.month(15, 20, "delivery month 1 contract month"), ln.month(37, 42, "delivery month 2 contract month")]
    return tuple(m for m in months[:min(n, 2)] if m)


def _charges(f: RecordFile, rates: dict[str, float], notes: dict) -> dict[str, dict]:
    """Per combined commodity: intra spread charge (C), spot charge, short option minimum and its method (4)."""
    out = {}
    intra_rates, intra_skipped, spot_notes = {}, [], {}
    for cc in f.commodities:
        fx = rates[cc]
        row = {"intra_spread_charge": 0.0, "spot_charge": 0.0, "short_option_minimum": 0.0, "som_method": "gross"}
        modelled = []
        for ln, priority, rate, legs in f.intra.get(cc, ()):
            ok = (len(legs) == 2 and legs[0][1] == legs[1][1] == 1 and {legs[0][2], legs[1][2]} == {"A", "B"}
                  and legs[0][0] != legs[1][0])
            if ok:
                modelled.append(rate)
            else:
                intra_skipped.append({"line": ln.number, "commodity": cc, "priority": priority,
                                      "legs": [{"tier": t, "ratio": r, "side": s} for t, r, s in legs],
                                      "why": "only two-leg 1:1 A/B spreads between two tiers are modelled"})
        if modelled:
            row["intra_spread_charge"] = max(modelled) * fx
            if len(set(modelled)) > 1:
                intra_rates[cc] = sorted(set(modelled))
        ln = f.delivery.get(cc)
        if ln is not None:
            method = ln.code(9, 10, "delivery (spot) charge method code")
            if method == "10":
                n = ln.unsigned(11, 12, "number of contract months in delivery", default=0)
                pairs = [(ln.unsigned(21, 27, "delivery month 1 charge rate per delta consumed by spreads", default=0),
                          ln.unsigned(28, 34, "delivery month 1 charge rate per delta remaining in outrights",
                                      default=0)),
                         (ln.unsigned(43, 49, "delivery month 2 charge rate per delta consumed by spreads", default=0),
                          ln.unsigned(50, 56, "delivery month 2 charge rate per delta remaining in outrights",
                                      default=0))][:min(n, 2)]
                if pairs:
                    row["spot_charge"] = max(o for _, o in pairs) * fx
                    if len({o for _, o in pairs}) > 1 or any(s != o for s, o in pairs):
                        spot_notes[cc] = {"spread_rates": [s for s, _ in pairs],
                                          "outright_rates": [o for _, o in pairs],
                                          "used": max(o for _, o in pairs)}
            elif method:
                spot_notes[cc] = {"method": method, "why": "only the table-driven method 10 is modelled"}
            row["short_option_minimum"] = float(ln.unsigned(63, 69, "short option minimum charge rate", default=0)) * fx
            # blank or 2: the sum of short calls and short puts; 1: the greater of the two
            som = ln.code(79, 79, "short option minimum calculation method")
            if som not in ("", "1", "2"):
                raise ln.error(79, 79, "short option minimum calculation method", f"must be 1, 2 or blank, got {som!r}")
            row["som_method"] = "max" if som == "1" else "gross"
        out[cc] = row
    orphans = {rid: sorted(set(by) - set(f.commodities)) for rid, by in (("3", f.tiers), ("C", f.intra),
                                                                          ("4", f.delivery))}
    orphans = {rid: ccs for rid, ccs in orphans.items() if ccs}
    if orphans:
        notes["records_for_unknown_commodities"] = orphans  # no type 2 record: nothing to charge
    if intra_rates:
        notes["intra_spread_rates_differ"] = intra_rates  # the largest is charged on every tier pair
    if intra_skipped:
        notes["intra_spreads_not_modelled"] = intra_skipped
    if spot_notes:
        notes["spot_charge_simplified"] = spot_notes
    return out


def _inter_spreads(f: RecordFile, notes: dict):
    rows, skipped = [], []
    for order, ln in enumerate(f.inter):
        priority = ln.unsigned(6, 9, "spread priority", default=0)
        rate = scaled_value(ln.unsigned(10, 16, "spread credit rate in percent 9(3)V9(4)", required=True), 6)
        legs = []
        for k in range(4):
            b = 17 + 18 * k
            cc = ln.code(b + 4, b + 9, f"combined commodity code leg {k + 1}")
            if not cc:
                continue
            ratio = scaled_value(ln.unsigned(b + 10, b + 16, f"delta/spread ratio leg {k + 1} 9(3)V9(4)", required=True), 4)
            side = ln.code(b + 17, b + 17, f"spread side leg {k + 1}", required=True)
            if side not in ("A", "B"):
                raise ln.error(b + 17, b + 17, f"spread side leg {k + 1}", f"must be A or B, got {side!r}")
            legs.append((cc, ratio, side))
        method = ln.code(89, 90, "intercommodity spread method code")
        credit = ln.code(101, 101, "credit calculation method")
        tiers = [ln.unsigned(102 + 2 * k, 103 + 2 * k, f"tier number leg {k + 1}", default=0) for k in range(4)]
        group = ln.code(110, 110, "spread group flag")
        per_leg = ln.code(122, 122, "spread credit rate defined separately for each leg")
        if per_leg == "Y":
            leg_rates = {scaled_value(ln.unsigned(123 + 7 * k, 129 + 7 * k, f"spread credit rate leg {k + 1}",
                                             default=0), 6) for k in range(len(legs))}
            rate = leg_rates.pop() if len(leg_rates) == 1 else None
        why = None
        if len(legs) != 2 or {legs[0][2], legs[1][2]} != {"A", "B"} or legs[0][0] == legs[1][0]:
            why = "only two-leg A/B spreads between two combined commodities are modelled"
        elif method not in ("", "01", "20") or (method == "20" and any(tiers)):
            why = f"method {method}: only delta-based spreads between whole combined commodities are modelled"
        elif credit not in ("", "W"):
            why = f"credit calculation method {credit}: only the weighted futures price risk method is modelled"
        elif rate is None:
            why = "different credit rates per leg"
        elif any(cc not in f.commodities for cc, _, _ in legs):
            why = "a leg's combined commodity has no type 2 record in this file"
        elif any(r <= 0 for _, r, _ in legs):
            why = "a delta/spread ratio of 0"
        if why is None and not 0.0 <= rate <= 1.0:
            raise ln.error(10, 16, "spread credit rate in percent 9(3)V9(4)",
                           f"a credit rate of {rate * 100:g}%, above 100%")
        if why is not None:
            skipped.append({"line": ln.number, "priority": priority, "legs": [cc for cc, _, _ in legs], "why": why})
            continue
        if group == "S":
            notes.setdefault("super_spreads_after_intra", []).append(ln.number)  # evaluated after intra here
        rows.append((priority, order, (legs[0][0], legs[1][0]), (legs[0][1], legs[1][1]), rate))
    if skipped:
        notes["inter_spreads_not_modelled"] = skipped
    rows.sort(key=lambda r: (r[0], r[1]))
    return [(names, ratios, rate) for _, _, names, ratios, rate in rows]


def load_pa2(path: str) -> RiskParameters:
    """A SPAN risk parameter file in CME's expanded unpacked format as ``RiskParameters`` (module docstring;
    docs/span_files.md). Money is in the first combined commodity's performance-bond currency."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise InputError("no such file", source=path) from None
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror}", source=path) from None
    f = RecordFile(path)
    blank = 0
    for number, text in enumerate(data.decode("latin-1").splitlines(), start=1):
        if not text.strip():
            blank += 1
            continue
        f.add(Line(path, number, text))
    f.finish()
    if not f.arrays:
        raise InputError("no risk array records (81/82 or 83/84)", source=path)
    currency, rates = _currency(f)
    notes = f.notes
    contracts = _contracts(f, rates, notes)
    commodities = _charges(f, rates, notes)
    inter = _inter_spreads(f, notes)
    notes["exchanges"] = f.exchanges or sorted({c.exchange for c in f.commodities.values()})
    notes["records_read"] = dict(f.read)
    notes["skipped_records"] = dict(f.skipped)
    if blank:
        notes["blank_lines"] = blank
    if any(c.currency != currency for c in f.commodities.values()):
        notes["converted_currencies"] = sorted({c.currency for c in f.commodities.values()} - {currency})
    notes["source_file"] = os.path.basename(path)
    return RiskParameters(currency, commodities, contracts, inter, path, notes)


__all__ = ["OPTION_TYPES", "READ_RECORDS", "TIERED_SCANNING", "load_pa2"]


def load_risk_file(path: str) -> RiskParameters:
    """A risk parameter file by extension: CME's expanded positional format (``.pa2``, ``load_pa2``) or SPEC
    section 6's YAML/JSON (``pmjax.io.risk_parameters.load_risk_parameters``)."""
    if os.path.splitext(path)[1].lower() == ".pa2":
        return load_pa2(path)
    return load_risk_parameters(path)

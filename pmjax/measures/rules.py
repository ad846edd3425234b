"""Rules-based margin: Deribit standard margin per position, or a broker's strategy-based margin.

The baseline that portfolio margin is compared with. Two modes (config ``rules.mode``):

- ``deribit_standard``: every position alone, by Deribit's standard-margin formulas (per coin, USD):
  short call IM = max(a - OTM/U, f) P + mark, MM = m P + mark; short put MM = max(m P, m mark) + mark,
  IM = max(max(a - OTM/U, f) P + mark, MM); futures and perpetuals (b + |Q| s) x notional with Q the
  position's size in coins; long options their mark (``long_option_charge: premium``) or 0; long spot its value
  (``long_spot_charge: full_value``: paid in full) or 0 (``none``: collateral); short spot as a delta-one position at the futures rates.
  U is the option's underlying price (its expiry's forward, or the index with ``option_underlying: index``);
  P values one coin of requirement: the index for inverse (coin-settled) contracts, U (or the future's
  forward) for linear ones.
- ``strategy``: offsetting legs are recognised greedily, in ``strategy_priority`` order, each coin of a
  leg used once; within a type the candidate saving the most initial margin per coin goes first, and a
  strategy is formed only if it saves margin. What is left is margined as in ``deribit_standard``.
  Strategy requirements per coin (USD): iron condor (short inner put and call, long wings, one expiry):
  the wider wing's width; credit vertical: the strike width; debit vertical: the net debit (0 with
  ``long_option_charge: none``); covered call/put (a short call against long spot, a long perpetual or a
  long future expiring no earlier; a short put against short spot, perpetual or future): the cover's own
  requirement, nothing on the option; calendar (short near, long far, one strike): the net debit, floored
  at 0; straddle/strangle (short call and put, one expiry): the greater side's naked requirement plus the
  other side's mark. A strategy's maintenance is capped at its legs' standalone maintenance.

Every figure is a positive requirement in the portfolio's margin currency (computed in USD, converted to a
coin at today's index). Option marks come from ``pmjax.greeks.price_instruments`` (the kernel's Black-76).
"""

from __future__ import annotations

import dataclasses
import os

from pmjax.core.errors import InputError
from pmjax.io.portfolio import COLLATERAL_CURRENCIES
from pmjax.core.greeks import price_instruments
from pmjax.core.instruments import UNDERLYINGS, Instrument, finite_number
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio

MODES = ("deribit_standard", "strategy")
STRATEGY_KINDS = ("iron_condor", "vertical", "covered", "calendar", "straddle")
LONG_OPTION_CHARGES = ("premium", "none")
LONG_SPOT_CHARGES = ("full_value", "none")
OPTION_UNDERLYINGS = ("forward", "index")
RATE_KEYS = ("option_initial", "option_initial_floor", "option_maintenance", "future_initial",
             "future_initial_per_coin", "future_maintenance", "future_maintenance_per_coin")
NAKED = "naked"


# ---------------------------------------------------------------- settings

def _source(config: dict) -> str:
    return config.get("_source", "configs/rules.yaml")


def rules_settings(config: dict) -> dict:
    """The validated ``rules`` block of a merged config; raises ``InputError`` naming the bad field."""
    src = _source(config)
    r = config.get("rules")
    if not isinstance(r, dict):
        raise InputError("missing rules section", source=src, field="rules")

    def choice(key, allowed, default):
        v = r.get(key, default)
        if v not in allowed:
            raise InputError(f"must be one of {', '.join(allowed)}, got {v!r}", source=src, field=f"rules.{key}")
        return v

    out = {"mode": choice("mode", MODES, "strategy"),
           "long_option_charge": choice("long_option_charge", LONG_OPTION_CHARGES, "premium"),
           "long_spot_charge": choice("long_spot_charge", LONG_SPOT_CHARGES, "full_value"),
           "option_underlying": choice("option_underlying", OPTION_UNDERLYINGS, "forward")}
    rates = {}
    for u, d in (r.get("underlyings") or {}).items():
        if not isinstance(d, dict):
            raise InputError("must be a mapping of rates", source=src, field=f"rules.underlyings.{u}")
        row = {}
        for k in RATE_KEYS:
            f = f"rules.underlyings.{u}.{k}"
            if k not in d:
                raise InputError("missing", source=src, field=f)
            x = finite_number(d[k], source=src, field=f)
            if x < 0:
                raise InputError(f"must not be negative, got {d[k]!r}", source=src, field=f)
            row[k] = x
        rates[str(u).upper()] = row
    out["underlyings"] = rates
    prio = r.get("strategy_priority", list(STRATEGY_KINDS))
    if not isinstance(prio, list) or any(p not in STRATEGY_KINDS for p in prio) or len(set(prio)) != len(prio):
        raise InputError(f"must be a list of distinct names from {', '.join(STRATEGY_KINDS)}, got {prio!r}",
                         source=src, field="rules.strategy_priority")
    out["strategy_priority"] = list(prio)
    out["pm_minimum_equity"] = _minimum_equity(r.get("pm_minimum_equity", {"amount": 0.0, "currency": "USD"}), src)
    return out


def _minimum_equity(d, src) -> tuple[float, str]:
    f = "rules.pm_minimum_equity"
    if not isinstance(d, dict) or "amount" not in d:
        raise InputError("must be a mapping {amount, currency}", source=src, field=f)
    amount = finite_number(d["amount"], source=src, field=f"{f}.amount")
    cur = str(d.get("currency", "USD")).upper()
    if cur not in COLLATERAL_CURRENCIES:
        raise InputError(f"currency must be one of {', '.join(COLLATERAL_CURRENCIES)}, got {d.get('currency')!r}",
                         source=src, field=f"{f}.currency")
    return amount, cur


def _rates(settings: dict, underlying: str, src: str) -> dict:
    if underlying not in settings["underlyings"]:
        raise InputError(f"no margin rates for underlying {underlying}", source=src,
                         field=f"rules.underlyings.{underlying}")
    return settings["underlyings"][underlying]


# ---------------------------------------------------------------- standalone (Deribit standard) margin

def short_option_margin(is_call: bool, strike: float, underlying_price: float, coin_price: float, mark: float,
                        rates: dict) -> tuple[float, float]:
    """(initial, maintenance) of one coin short of an option, USD, by Deribit's standard-margin formulas.

    underlying_price: U in the OTM term; coin_price: P, the USD value of one coin of requirement;
    mark: the option's value, USD per coin.
    """
    otm = max(strike - underlying_price, 0.0) if is_call else max(underlying_price - strike, 0.0)
    rate = max(rates["option_initial"] - otm / underlying_price, rates["option_initial_floor"])
    m = rates["option_maintenance"]
    if is_call:
        return rate * coin_price + mark, m * coin_price + mark
    maintenance = max(m * coin_price, m * mark) + mark
    return max(rate * coin_price + mark, maintenance), maintenance


def future_margin(size: float, coin_price: float, rates: dict) -> tuple[float, float]:
    """(initial, maintenance) per coin of a futures position of ``size`` coins in all, USD per coin."""
    a = abs(size)
    return ((rates["future_initial"] + a * rates["future_initial_per_coin"]) * coin_price,
            (rates["future_maintenance"] + a * rates["future_maintenance_per_coin"]) * coin_price)


@dataclasses.dataclass(frozen=True)
class Leg:
    """One position with what the rules need; money in USD per coin."""

    index: int
    instrument: Instrument
    quantity: float  # coins, negative = short
    mark: float  # option value (0 for non-options)
    spot: float  # index
    forward: float  # forward of the expiry (spot for perpetual and spot)
    initial: float  # standalone requirement per coin
    maintenance: float


def _marks(portfolio: Portfolio, market: Market, dtype=None) -> dict[str, float]:
    """Option marks, USD per coin, from the kernel (``pmjax.greeks.price_instruments``)."""
    options = [p.instrument for p in portfolio.positions if p.instrument.is_option]
    if not options:
        return {}
    kw = {} if dtype is None else {"dtype": dtype}
    return {r["instrument"]: r["price_usd"] for r in price_instruments(options, market, **kw)}


def standalone_legs(portfolio: Portfolio, market: Market, settings: dict, *, source: str = "rules",
                    dtype=None) -> list[Leg]:
    """Each position with its Deribit standard-margin requirement per coin (USD)."""
    marks = _marks(portfolio, market, dtype)
    legs = []
    for k, p in enumerate(portfolio.positions):
        inst, q = p.instrument, p.quantity
        rates = _rates(settings, inst.underlying, source)
        spot = market.spot(inst.underlying)
        fwd = market.forward(inst.underlying, inst.expiry)
        mark = 0.0
        if inst.is_option:
            mark = marks[inst.name]
            if q < 0:
                u = fwd if settings["option_underlying"] == "forward" else spot
                im, mm = short_option_margin(inst.right == "call", inst.strike, u,
                                             spot if inst.settlement == "inverse" else u, mark, rates)
            else:
                im = mm = mark if settings["long_option_charge"] == "premium" else 0.0
        elif inst.kind == "spot" and q >= 0:
            # paid in full, like a long option's premium (``long_spot_charge: full_value``), or left out of
            # the requirement as collateral (``none``)
            im = mm = spot if settings["long_spot_charge"] == "full_value" else 0.0
        else:  # futures, perpetuals, and short spot (a borrowed coin) as a delta-one position
            im, mm = future_margin(q, spot if inst.settlement == "inverse" else fwd, rates)
        legs.append(Leg(k, inst, q, mark, spot, fwd, im, mm))
    return legs


# ---------------------------------------------------------------- strategy recognition

@dataclasses.dataclass(frozen=True)
class Candidate:
    """A strategy built from ``legs`` (position index, +1 long / -1 short), one coin of each per unit."""

    type: str
    legs: tuple[tuple[int, int], ...]
    initial: float  # USD per unit
    maintenance: float


def _candidate(type_, legs, initial, maintenance, by_index) -> Candidate:
    standalone_mm = sum(by_index[i].maintenance for i, _ in legs)
    return Candidate(type_, tuple(legs), initial, min(maintenance, standalone_mm))


def _same_series(a: Instrument, b: Instrument) -> bool:
    return a.underlying == b.underlying and a.expiry == b.expiry and a.settlement == b.settlement


def candidates(kind: str, legs: list[Leg], settings: dict) -> list[Candidate]:
    """Every strategy of ``kind`` the positions' signs allow (availability is checked while pairing)."""
    by_index = {g.index: g for g in legs}
    charge = 1.0 if settings["long_option_charge"] == "premium" else 0.0
    opts = [g for g in legs if g.instrument.is_option]
    short = lambda right: [g for g in opts if g.quantity < 0 and g.instrument.right == right]  # noqa: E731
    long = lambda right: [g for g in opts if g.quantity > 0 and g.instrument.right == right]  # noqa: E731
    out = []
    if kind == "iron_condor":
        for sp in short("put"):
            for lp in long("put"):
                if not (_same_series(sp.instrument, lp.instrument) and lp.instrument.strike < sp.instrument.strike):
                    continue
                for sc in short("call"):
                    if not (_same_series(sp.instrument, sc.instrument) and sc.instrument.strike >= sp.instrument.strike):
                        continue
                    for lc in long("call"):
                        if _same_series(sc.instrument, lc.instrument) and lc.instrument.strike > sc.instrument.strike:
                            width = max(sp.instrument.strike - lp.instrument.strike,
                                        lc.instrument.strike - sc.instrument.strike)
                            out.append(_candidate("iron_condor", [(lp.index, 1), (sp.index, -1), (sc.index, -1),
                                                                  (lc.index, 1)], width, width, by_index))
    elif kind == "vertical":
        for right in ("call", "put"):
            for s in short(right):
                for g in long(right):
                    if not _same_series(s.instrument, g.instrument) or s.instrument.strike == g.instrument.strike:
                        continue
                    ks, kl = s.instrument.strike, g.instrument.strike
                    credit = ks < kl if right == "call" else ks > kl
                    req = abs(ks - kl) if credit else charge * max(g.mark - s.mark, 0.0)
                    out.append(_candidate(f"vertical_{right}_{'credit' if credit else 'debit'}",
                                          [(s.index, -1), (g.index, 1)], req, req, by_index))
    elif kind == "covered":
        for right, sign in (("call", 1), ("put", -1)):
            for s in short(right):
                for c in legs:
                    ci = c.instrument
                    if (ci.underlying != s.instrument.underlying or ci.is_option or c.quantity * sign <= 0
                            or (ci.kind == "future" and ci.expiry < s.instrument.expiry)):
                        continue
                    out.append(_candidate(f"covered_{right}", [(s.index, -1), (c.index, sign)],
                                          c.initial, c.maintenance, by_index))
    elif kind == "calendar":
        for right in ("call", "put"):
            for s in short(right):
                for g in long(right):
                    a, b = s.instrument, g.instrument
                    if (a.underlying == b.underlying and a.settlement == b.settlement and a.strike == b.strike
                            and b.expiry > a.expiry):
                        req = charge * max(g.mark - s.mark, 0.0)
                        out.append(_candidate("calendar", [(s.index, -1), (g.index, 1)], req, req, by_index))
    elif kind == "straddle":
        for c in short("call"):
            for p in short("put"):
                if not _same_series(c.instrument, p.instrument):
                    continue
                im = c.initial + p.mark if c.initial >= p.initial else p.initial + c.mark
                mm = c.maintenance + p.mark if c.maintenance >= p.maintenance else p.maintenance + c.mark
                type_ = "straddle" if c.instrument.strike == p.instrument.strike else "strangle"
                out.append(_candidate(type_, [(c.index, -1), (p.index, -1)], im, mm, by_index))
    else:
        raise ValueError(f"unknown strategy kind {kind!r}")
    return out


def recognise(legs: list[Leg], settings: dict) -> tuple[list[tuple[Candidate, float]], dict[int, float]]:
    """Greedy pairing: (strategies with their quantities in coins, quantities left per position index)."""
    by_index = {g.index: g for g in legs}
    left = {g.index: g.quantity for g in legs}
    tol = lambda i: 1e-12 * max(1.0, abs(by_index[i].quantity))  # noqa: E731
    found = []
    for kind in settings["strategy_priority"]:
        cands = candidates(kind, legs, settings)
        while True:
            best, best_key = None, None
            for order, c in enumerate(cands):
                if any(left[i] * sign <= tol(i) for i, sign in c.legs):
                    continue
                saving = sum(by_index[i].initial for i, _ in c.legs) - c.initial
                if saving <= 0.0:
                    continue
                key = (-saving, c.initial, order)
                if best_key is None or key < best_key:
                    best, best_key = c, key
            if best is None:
                break
            q = min(abs(left[i]) for i, _ in best.legs)
            for i, sign in best.legs:
                left[i] -= sign * q
                if abs(left[i]) <= tol(i):
                    left[i] = 0.0
            found.append((best, q))
    return found, left


# ---------------------------------------------------------------- public entry

def _share(total: float, weights: list[float]) -> list[float]:
    s = sum(weights)
    return [total * w / s for w in weights] if s > 0 else [total / len(weights)] * len(weights)


def rules_margin(portfolio: Portfolio, market: Market, config: dict, *, dtype=None) -> dict:
    """SPEC section 3 ``rules``: {"initial", "maintenance", "by_position", "strategies", "naked", "mode",
    "standard"}; money in the portfolio's margin currency, positive requirements.

    by_position has one row per position slice (a position split across strategies gives several rows);
    a strategy's requirement is shared among its legs in proportion to their standalone requirements.
    ``standard`` holds the Deribit standard (every position alone) totals, for comparison. ``dtype``: the
    precision of the option marks (float64 by default).
    """
    settings = rules_settings(config)
    src = _source(config)
    legs = standalone_legs(portfolio, market, settings, source=src, dtype=dtype)
    cur = portfolio.margin_currency
    to_cur = 1.0 if cur == "USD" else 1.0 / market.spot(cur)
    if settings["mode"] == "strategy":
        found, left = recognise(legs, settings)
    else:
        found, left = [], {g.index: g.quantity for g in legs}
    by_index = {g.index: g for g in legs}
    strategies, slices = [], []
    for sid, (c, q) in enumerate(found):
        im, mm = c.initial * q * to_cur, c.maintenance * q * to_cur
        strategies.append({"id": sid, "type": c.type, "quantity": q, "initial": im, "maintenance": mm,
                           "legs": [{"instrument": by_index[i].instrument.name, "quantity": sign * q}
                                    for i, sign in c.legs]})
        ims = _share(im, [by_index[i].initial for i, _ in c.legs])
        mms = _share(mm, [by_index[i].maintenance for i, _ in c.legs])
        for (i, sign), a, b in zip(c.legs, ims, mms):
            slices.append((i, sid, {"instrument": by_index[i].instrument.name, "quantity": sign * q,
                                    "initial": a, "maintenance": b, "strategy": c.type, "strategy_id": sid}))
    naked = []
    for g in legs:
        q = left[g.index]
        row = {"instrument": g.instrument.name, "quantity": q, "initial": g.initial * abs(q) * to_cur,
               "maintenance": g.maintenance * abs(q) * to_cur}
        if q != 0.0:
            naked.append(row)
        if q != 0.0 or g.quantity == 0.0:
            slices.append((g.index, len(found), {**row, "strategy": NAKED, "strategy_id": None}))
    slices.sort(key=lambda s: (s[0], s[1]))
    initial = sum(s["initial"] for s in strategies) + sum(r["initial"] for r in naked)
    maintenance = sum(s["maintenance"] for s in strategies) + sum(r["maintenance"] for r in naked)
    standard = {"initial": sum(g.initial * abs(g.quantity) for g in legs) * to_cur,
                "maintenance": sum(g.maintenance * abs(g.quantity) for g in legs) * to_cur}
    return {"mode": settings["mode"], "initial": initial, "maintenance": maintenance,
            "by_position": [s[2] for s in slices], "strategies": strategies, "naked": naked, "standard": standard}


# ---------------------------------------------------------------- account equity and PM qualification

def _usd_per_unit(currency: str, market: Market) -> float:
    return 1.0 if currency in ("USD", "USDC") else market.spot(currency)


def account_equity(portfolio: Portfolio, market: Market, collateral: dict[str, float] | None = None, *,
                   dtype=None) -> float:
    """Collateral plus position values, in the portfolio's margin currency.

    Position values: options at their mark, spot at the index, futures and perpetuals 0 (their value is
    the P&L since entry, which a portfolio file does not record).
    """
    marks = _marks(portfolio, market, dtype)
    usd = sum(a * _usd_per_unit(c, market) for c, a in (collateral or {}).items())
    for p in portfolio.positions:
        inst = p.instrument
        if inst.is_option:
            usd += p.quantity * marks[inst.name]
        elif inst.kind == "spot":
            usd += p.quantity * market.spot(inst.underlying)
    return usd / _usd_per_unit(portfolio.margin_currency, market)


def qualifies_for_pm(equity: float, config: dict, currency: str, market: Market) -> tuple[bool, str]:
    """Whether an account with ``equity`` (in ``currency``) meets ``rules.pm_minimum_equity``; (ok, reason)."""
    amount, cur = rules_settings(config)["pm_minimum_equity"]
    minimum = amount * _usd_per_unit(cur, market) / _usd_per_unit(currency, market)
    ok = equity >= minimum
    shown = f"{amount:,.8g} {cur}" + ("" if cur == currency else f" = {minimum:,.8g} {currency}")
    verdict = "meets" if ok else "is below"
    return ok, f"equity {equity:,.8g} {currency} {verdict} the portfolio-margin minimum {shown} (rules.pm_minimum_equity)"


def pm_qualification(portfolio: Portfolio, market: Market, config: dict,
                     collateral: dict[str, float] | None = None, *, dtype=None) -> dict:
    """{"equity", "minimum", "currency", "qualifies", "reason"}: the account's equity (collateral plus
    position values) against ``rules.pm_minimum_equity``, both in the portfolio's margin currency."""
    cur = portfolio.margin_currency
    equity = account_equity(portfolio, market, collateral, dtype=dtype)
    amount, min_cur = rules_settings(config)["pm_minimum_equity"]
    ok, reason = qualifies_for_pm(equity, config, cur, market)
    return {"equity": equity, "minimum": amount * _usd_per_unit(min_cur, market) / _usd_per_unit(cur, market),
            "currency": cur, "qualifies": ok, "reason": reason}



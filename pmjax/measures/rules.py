"""Rules-based margin: Deribit standard margin per position, or a broker's strategy-based margin.

The baseline that portfolio margin is compared with. Two modes (config ``rules.mode``):

- ``deribit_standard``: every position alone, by Deribit's standard-margin formulas (per coin, USD):
  short call IM = max(a - OTM/U, f) P + mark, MM = m P + mark; short put MM = max(m P, m mark) + mark,
  IM = max(max(a - OTM/U, f) P + mark, MM); futures and perpetuals (b + |Q| s) x notional with Q the
  position's size in coins; long options their mark (``long_option_charge: premium``) or 0; coins held (long
  spot, or a coin in ``collateral:``) nothing: they are collateral, counted in equity at the index; short spot as
  a delta-one position at the futures rates.
  U is the option's underlying price (its expiry's forward, or the index with ``option_underlying: index``);
  P values one coin of requirement: the index for inverse (coin-settled) contracts, U (or the future's
  forward) for linear ones.
- ``strategy``: offsetting legs are paired into strategies, each coin of a leg used once, by ``pairing``:
  ``optimal`` (default) the least total initial margin, one linear program per underlying
  (``pmjax.measures.rules_optimal``); ``greedy`` in ``strategy_priority`` order, within a type the candidate
  saving the most initial margin per coin first (``pmjax.measures.rules_candidates``). A strategy is formed
  only if it saves margin. What is left is margined as in ``deribit_standard``.
  Strategy requirements per coin (USD): iron condor (short inner put and call, long wings, one expiry):
  the wider wing's width; credit vertical: the strike width; debit vertical: the net debit (0 with
  ``long_option_charge: none``); covered call/put (a short call against coins held, as long spot or as
  ``collateral:``, a long perpetual or a long future expiring no earlier; a short put against short spot,
  perpetual or future): the cover's own requirement, nothing on the option; calendar (short near, long far,
  one strike): the net debit, floored at 0; straddle/strangle (short call and put, one expiry): the greater
  side's naked requirement plus the other side's mark. A strategy's maintenance is capped at its legs' standalone maintenance.

Every figure is a positive requirement in the portfolio's margin currency (computed in USD, converted to a
coin at today's index). Option marks come from ``pmjax.core.greeks.option_prices`` (the kernel's
Black-76). Formulas: docs/methodology.md section 8.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx

from pmjax.core.collection import collection_paused
from pmjax.core.errors import InputError
from pmjax.io.portfolio import COLLATERAL_CURRENCIES
from pmjax.core.greeks import option_prices
from pmjax.core.instruments import UNDERLYINGS, Instrument
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio
from pmjax.core.validate import finite_number
from pmjax.measures.rules_candidates import greedy
from pmjax.measures.rules_optimal import optimal

MODES = ("deribit_standard", "strategy")
STRATEGY_KINDS = ("iron_condor", "vertical", "covered", "calendar", "straddle")
LONG_OPTION_CHARGES = ("premium", "none")
OPTION_UNDERLYINGS = ("forward", "index")
PAIRINGS = ("optimal", "greedy")
RATE_KEYS = ("option_initial", "option_initial_floor", "option_maintenance", "future_initial",
             "future_initial_per_coin", "future_maintenance", "future_maintenance_per_coin")
NAKED = "naked"


# ---------------------------------------------------------------- parameters

@dataclasses.dataclass(frozen=True)
class Rates:
    """One underlying's standard-margin rates (fractions; ``*_per_coin`` per coin of position size)."""

    option_initial: float
    option_initial_floor: float
    option_maintenance: float
    future_initial: float
    future_initial_per_coin: float
    future_maintenance: float
    future_maintenance_per_coin: float


class RulesParams(eqx.Module):
    """The validated ``rules`` block (see the module doc); every field static (rules is plain Python).

    ``rates``: (underlying, ``Rates``) pairs; ``pm_minimum_equity``: (amount, currency); ``dtype``: the
    precision of the option marks (None: float64); ``source``: the config file named in errors.
    """

    mode: str = eqx.field(static=True)
    long_option_charge: str = eqx.field(static=True)
    option_underlying: str = eqx.field(static=True)
    rates: tuple[tuple[str, Rates], ...] = eqx.field(static=True)
    strategy_priority: tuple[str, ...] = eqx.field(static=True)
    pm_minimum_equity: tuple[float, str] = eqx.field(static=True)
    pairing: str = eqx.field(static=True, default="optimal")
    neighbours: int = eqx.field(static=True, default=2)
    dtype: object = eqx.field(static=True, default=None)
    source: str = eqx.field(static=True, default="configs/rules.yaml")

    def __check_init__(self):
        src = self.source
        for key, allowed in (("mode", MODES), ("long_option_charge", LONG_OPTION_CHARGES),
                             ("option_underlying", OPTION_UNDERLYINGS), ("pairing", PAIRINGS)):
            v = getattr(self, key)
            if v not in allowed:
                raise InputError(f"must be one of {', '.join(allowed)}, got {v!r}", source=src, field=f"rules.{key}")
        for u, rates in self.rates:
            for k in RATE_KEYS:
                x = getattr(rates, k)
                if not x >= 0:
                    raise InputError(f"must not be negative, got {x!r}", source=src, field=f"rules.underlyings.{u}.{k}")
        if not 1 <= self.neighbours <= 1000:
            raise InputError(f"must be from 1 to 1000, got {self.neighbours!r}", source=src, field="rules.neighbours")
        prio = self.strategy_priority
        if any(p not in STRATEGY_KINDS for p in prio) or len(set(prio)) != len(prio):
            raise InputError(f"must be a list of distinct names from {', '.join(STRATEGY_KINDS)}, got {list(prio)!r}",
                             source=src, field="rules.strategy_priority")
        cur = self.pm_minimum_equity[1]
        if cur not in COLLATERAL_CURRENCIES:
            raise InputError(f"currency must be one of {', '.join(COLLATERAL_CURRENCIES)}, got {cur!r}",
                             source=src, field="rules.pm_minimum_equity.currency")

    def underlying_rates(self, underlying: str) -> Rates:
        """The rates of ``underlying``; ``InputError`` naming the config field if it has none."""
        for u, rates in self.rates:
            if u == underlying:
                return rates
        raise InputError(f"no margin rates for underlying {underlying}", source=self.source,
                         field=f"rules.underlyings.{underlying}")


def rules_params(config: dict, *, dtype=None) -> RulesParams:
    """``RulesParams`` from a merged config's ``rules`` block; raises ``InputError`` naming the bad field.
    ``dtype``: precision of the option marks (None: float64)."""
    src = config.get("_source", "configs/rules.yaml")
    r = config.get("rules")
    if not isinstance(r, dict):
        raise InputError("missing rules section", source=src, field="rules")
    rates = []
    for u, d in (r.get("underlyings") or {}).items():
        if not isinstance(d, dict):
            raise InputError("must be a mapping of rates", source=src, field=f"rules.underlyings.{u}")
        row = {}
        for k in RATE_KEYS:
            f = f"rules.underlyings.{u}.{k}"
            if k not in d:
                raise InputError("missing", source=src, field=f)
            row[k] = finite_number(d[k], source=src, field=f)
        rates.append((str(u).upper(), Rates(**row)))
    if r.get("long_spot_charge", "none") != "none":
        raise InputError("coins held are collateral (equity at the index), never a requirement, so the only value "
                         f"left is none (or leave the key out); got {r['long_spot_charge']!r}; see "
                         "docs/methodology.md section 8.2", source=src, field="rules.long_spot_charge")
    k = r.get("neighbours", 2)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise InputError(f"must be a whole number from 1 to 1000, got {k!r}", source=src, field="rules.neighbours")
    prio = r.get("strategy_priority", list(STRATEGY_KINDS))
    if not isinstance(prio, list):
        raise InputError(f"must be a list of distinct names from {', '.join(STRATEGY_KINDS)}, got {prio!r}",
                         source=src, field="rules.strategy_priority")
    return RulesParams(mode=r.get("mode", "strategy"), long_option_charge=r.get("long_option_charge", "premium"),
                       option_underlying=r.get("option_underlying", "forward"), rates=tuple(rates),
                       strategy_priority=tuple(prio), pairing=r.get("pairing", "optimal"),
                       neighbours=k,
                       pm_minimum_equity=_minimum_equity(r.get("pm_minimum_equity",
                                                               {"amount": 0.0, "currency": "USD"}), src),
                       dtype=dtype, source=src)


def _minimum_equity(d, src) -> tuple[float, str]:
    f = "rules.pm_minimum_equity"
    if not isinstance(d, dict) or "amount" not in d:
        raise InputError("must be a mapping {amount, currency}", source=src, field=f)
    amount = finite_number(d["amount"], source=src, field=f"{f}.amount")
    return amount, str(d.get("currency", "USD")).upper()


# ---------------------------------------------------------------- standalone (Deribit standard) margin

def short_option_margin(is_call: bool, strike: float, underlying_price: float, coin_price: float, mark: float,
                        rates: Rates) -> tuple[float, float]:
    """(initial, maintenance) of one coin short of an option, USD, by Deribit's standard-margin formulas.

    underlying_price: U in the OTM term; coin_price: P, the USD value of one coin of requirement;
    mark: the option's value, USD per coin.
    """
    otm = max(strike - underlying_price, 0.0) if is_call else max(underlying_price - strike, 0.0)
    rate = max(rates.option_initial - otm / underlying_price, rates.option_initial_floor)
    m = rates.option_maintenance
    if is_call:
        return rate * coin_price + mark, m * coin_price + mark
    maintenance = max(m * coin_price, m * mark) + mark
    return max(rate * coin_price + mark, maintenance), maintenance


def future_margin(size: float, coin_price: float, rates: Rates) -> tuple[float, float]:
    """(initial, maintenance) per coin of a futures position of ``size`` coins in all, USD per coin."""
    a = abs(size)
    return ((rates.future_initial + a * rates.future_initial_per_coin) * coin_price,
            (rates.future_maintenance + a * rates.future_maintenance_per_coin) * coin_price)


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


def option_marks(portfolio: Portfolio, market: Market, dtype=None) -> dict[str, float]:
    """Option marks, USD per coin, by name, from the kernel (``pmjax.core.greeks.option_prices``)."""
    options = [p.instrument for p in portfolio.positions if p.instrument.is_option]
    if not options:
        return {}
    kw = {} if dtype is None else {"dtype": dtype}
    return dict(zip((o.name for o in options), option_prices(options, market, **kw)))


def standalone_legs(portfolio: Portfolio, market: Market, params: RulesParams,
                    marks: dict[str, float] | None = None) -> list[Leg]:
    """Each position with its Deribit standard-margin requirement per coin (USD), then each coin of the
    account's ``collateral:`` (a positive amount of BTC or ETH) as a long spot leg needing nothing: coins held,
    written either way, are equity and can cover a short call (their legs come after the positions').
    ``marks``: ``option_marks`` of the portfolio at ``params.dtype``, if at hand."""
    marks = option_marks(portfolio, market, params.dtype) if marks is None else marks
    legs, rates_of, spots, fwds = [], {}, {}, {}
    option_underlying, long_charge = params.option_underlying, params.long_option_charge  # eqx access is slow
    for k, p in enumerate(portfolio.positions):
        inst, q = p.instrument, p.quantity
        u = inst.underlying
        if u not in rates_of:
            rates_of[u], spots[u] = params.underlying_rates(u), market.spot(u)
        rates, spot = rates_of[u], spots[u]
        if (u, inst.expiry) not in fwds:
            fwds[(u, inst.expiry)] = market.forward(u, inst.expiry)
        fwd = fwds[(u, inst.expiry)]
        mark = 0.0
        if inst.is_option:
            mark = marks[inst.name]
            if q < 0:
                under = fwd if option_underlying == "forward" else spot
                im, mm = short_option_margin(inst.right == "call", inst.strike, under,
                                             spot if inst.settlement == "inverse" else under, mark, rates)
            else:
                im = mm = mark if long_charge == "premium" else 0.0
        elif inst.kind == "spot" and q >= 0:
            im = mm = 0.0  # a coin held is collateral: its value is equity (qualification), not a requirement
        else:  # futures, perpetuals, and short spot (a borrowed coin) as a delta-one position
            im, mm = future_margin(q, spot if inst.settlement == "inverse" else fwd, rates)
        legs.append(Leg(k, inst, q, mark, spot, fwd, im, mm))
    n, held = len(legs), {p.instrument.underlying for p in portfolio.positions}
    for j, (cur, amount) in enumerate(sorted((portfolio.collateral or {}).items())):
        if cur in UNDERLYINGS and cur in held and amount > 0:
            s = market.spot(cur)
            legs.append(Leg(n + j, Instrument(cur, "spot", "linear"), amount, 0.0, s, s, 0.0, 0.0))
    return legs


# ---------------------------------------------------------------- strategy recognition

def recognise(legs: list[Leg], params: RulesParams) -> tuple[list, dict[int, float], dict]:
    """Strategies by ``params.pairing``: (strategies with quantities in coins, quantities left per leg index,
    pairing report {"method", "requested", "greedy_initial", "saving_vs_greedy", ...}; money in USD).
    ``optimal`` falls back to ``greedy``, saying so in ``notice``, when scipy is not installed."""
    standalone = sum(g.initial * abs(g.quantity) for g in legs)

    def greedy_report(known=None):
        found, left = greedy(legs, params, known)
        greedy_im = standalone - _saving(found, legs)
        return found, left, {"requested": params.pairing, "method": "greedy", "greedy_initial": greedy_im,
                             "saving_vs_greedy": 0.0}

    if params.pairing != "optimal":
        return greedy_report()
    try:  # greedy (for the saving it reports) runs while the solver works
        opt, opt_left, solver, (found, left, report) = optimal(legs, params, meanwhile=greedy_report)
    except ImportError:
        found, left, report = greedy_report()
        report["notice"] = ("rules.pairing optimal needs scipy (its HiGHS solver), which is not installed: "
                            "greedy pairing used instead; pip install 'pmjax[rules]' (or scipy>=1.11)")
        return found, left, report
    except RuntimeError as e:  # the solver gave no optimum (never seen: the program is bounded and x = 0 feasible)
        found, left, report = greedy_report()
        report["notice"] = f"rules.pairing optimal: {e}; greedy pairing used instead"
        return found, left, report
    greedy_im = report["greedy_initial"]
    opt_im = standalone - _saving(opt, legs)
    report.update(solver)
    if opt_im > greedy_im + 1e-9 * max(1.0, greedy_im):  # never: greedy's pairing is one the program may choose
        return found, left, report | {"method": "greedy", "note": "optimal no better than greedy"}
    return opt, opt_left, report | {"method": "optimal", "saving_vs_greedy": greedy_im - opt_im}


def _saving(found, legs) -> float:
    by = {g.index: g.initial for g in legs}
    return sum(q * (sum(by[i] for i, _ in c.legs) - c.initial) for c, q in found)


# ---------------------------------------------------------------- margin and its section

@dataclasses.dataclass(frozen=True)
class RulesResult:
    """Rules margin of one account, in its margin currency (positive requirements); fields as SPEC
    section 3's ``rules`` section (see ``rules_margin``)."""

    mode: str
    initial: float
    maintenance: float
    by_position: list[dict]
    strategies: list[dict]
    naked: list[dict]
    standard: dict
    pairing: dict = dataclasses.field(default_factory=dict)


def _shares(total: float, weights: list[float]) -> list[float]:
    """``total`` split in proportion to ``weights`` (evenly when they sum to 0)."""
    s = sum(weights)
    return [total * w / s for w in weights] if s > 0 else [total / len(weights)] * len(weights)


def _strategy_rows(found, by_index, to_cur, n_positions) -> tuple[list[dict], list[tuple]]:
    """(strategies rows, by_position slices (index, strategy id, row)) of the recognised strategies; a leg
    from ``collateral:`` (index >= ``n_positions``) is marked ``"collateral": True`` and has no slice."""
    strategies, slices = [], []
    names = {i: g.instrument.name for i, g in by_index.items()}  # a name is formatted on every call
    ini = {i: g.initial for i, g in by_index.items()}
    mai = {i: g.maintenance for i, g in by_index.items()}
    for sid, (c, q) in enumerate(found):
        im, mm = c.initial * q * to_cur, c.maintenance * q * to_cur
        strategies.append({"id": sid, "type": c.type, "quantity": q, "initial": im, "maintenance": mm,
                           "legs": [{"instrument": names[i], "quantity": sign * q}
                                    | ({"collateral": True} if i >= n_positions else {}) for i, sign in c.legs]})
        ims = _shares(im, [ini[i] for i, _ in c.legs])
        mms = _shares(mm, [mai[i] for i, _ in c.legs])
        for (i, sign), a, b in zip(c.legs, ims, mms):
            if i < n_positions:
                slices.append((i, sid, {"instrument": names[i], "quantity": sign * q,
                                        "initial": a, "maintenance": b, "strategy": c.type, "strategy_id": sid}))
    return strategies, slices


def rules_margin(portfolio: Portfolio, market: Market, params: RulesParams, *,
                 marks: dict[str, float] | None = None) -> RulesResult:
    """Rules margin of ``portfolio`` under ``market`` (formulas: docs/methodology.md section 8).

    Rules is combinatorial Python (strategy pairing over instruments), not an array program, so it takes
    the portfolio, not a ``Book``, and is neither jitted nor vmapped. ``by_position`` has one row per
    position slice (a position split across strategies gives several rows); a strategy's requirement is
    shared among its legs in proportion to their standalone requirements. ``standard`` holds the Deribit
    standard (every position alone) totals, for comparison. ``marks``: as ``standalone_legs``.
    """
    with collection_paused():  # pairing allocates many small objects: no collections meanwhile
        return _rules_margin(portfolio, market, params, marks)


def _rules_margin(portfolio: Portfolio, market: Market, params: RulesParams, marks) -> RulesResult:
    legs = standalone_legs(portfolio, market, params, marks)
    cur = portfolio.margin_currency
    to_cur = 1.0 if cur == "USD" else 1.0 / market.spot(cur)
    if params.mode == "strategy":
        found, left, pairing = recognise(legs, params)
        pairing = {k: v * to_cur if k in ("greedy_initial", "saving_vs_greedy") else v for k, v in pairing.items()}
    else:
        found, left, pairing = [], {g.index: g.quantity for g in legs}, {"method": "none", "requested": "none"}
    n = len(portfolio.positions)
    strategies, slices = _strategy_rows(found, {g.index: g for g in legs}, to_cur, n)
    naked = []
    for g in legs[:n]:  # coins of collateral left over need nothing and are not positions
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
    return RulesResult(params.mode, initial, maintenance, [s[2] for s in slices], strategies, naked, standard,
                       pairing)


def rules_section(result: RulesResult) -> dict:
    """SPEC section 3 ``rules``: {"mode", "initial", "maintenance", "by_position", "strategies", "naked",
    "standard", "pairing", "pairing_detail"}; money in the portfolio's margin currency. ``pairing`` is the
    method that ran (optimal, greedy, or none in deribit_standard mode); ``pairing_detail`` adds the one
    asked for, greedy's initial margin and what optimal saves against it, and the solver's size and time."""
    detail = {k: v for k, v in result.pairing.items() if k != "method"}
    return {"mode": result.mode, "initial": result.initial, "maintenance": result.maintenance,
            "by_position": result.by_position, "strategies": result.strategies, "naked": result.naked,
            "standard": result.standard, "pairing": result.pairing.get("method", "none"), "pairing_detail": detail}

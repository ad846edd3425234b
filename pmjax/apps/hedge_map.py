"""Marginal margin of every listed contract: d headline / d quantity for each method, for a whole chain at once.

The account's book is extended with every contract the market lists (options of every listed expiry and strike,
calls and puts; dated futures; perpetuals), each at quantity 0, and padded to one bucket. A method's headline is a
JAX function of the quantities, so one reverse pass (``jax.grad``) gives its derivative with respect to every row:

- span: ``span_margin(book).total`` (scan risk, spreads, short option minimum, minus NOV);
- deribit: ``deribit_margin(book).initial`` (the 9-decimal rounding passes the gradient straight through);
- var: ES with the tail paths held fixed (as the ES contributions are): d ES / d q_j = the mean over the tail
  paths of contract j's loss per coin, one revaluation of every contract on the k tail paths.

Rules margin is combinatorial (strategy pairing), not a smooth function of the quantities: it has no map.
Margins are maxima and sums of maxima of functions linear in the quantities, so a derivative is the rate of a
small trade away from a kink (where two scenarios tie); ``finite_check`` gives the exact what-if of a trade
for comparison. Units: margin currency per coin traded (positive: buying raises the margin).
Formulas: docs/methodology.md section 11.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pmjax.core.book import book_from_portfolio, bucket_size, make_book, resolve
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS, Instrument
from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio
from pmjax.io.config import load_config
from pmjax.measures.deribit import deribit_margin, deribit_params
from pmjax.measures.span import span_margin, span_params
from pmjax.measures.var import var_margin, var_params
from pmjax.apps.names import KINDS, MAP_METHODS  # noqa: F401  (re-exported: methods with a map, kinds listed)
from pmjax.scenarios import montecarlo



def listed_contracts(market: Market, kinds=KINDS) -> list[Instrument]:
    """Every contract of ``market`` of the given kinds, not expired: the chain's coin-settled options (calls and
    puts of each listed strike; on a market that is not a chain, its smiles' strikes), futures of each listed
    forward's expiry, and each underlying's perpetual."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise InputError(f"unknown instrument kind(s) {', '.join(bad)} (choose from {', '.join(KINDS)})",
                         source="--instruments")
    out = []
    for u in UNDERLYINGS:
        if u not in market.underlyings:
            continue
        if "perpetuals" in kinds:
            out.append(Instrument(u, "perpetual", "inverse"))
        if "futures" in kinds:
            out += [Instrument(u, "future", "inverse", e) for e in sorted(market.underlying(u).forwards)
                    if market.years_to(e) > 0]
        if "options" in kinds:
            listed = (market.listed or {}).get(u)
            pairs = ([(e, k) for e, ks in sorted(listed.items()) if market.years_to(e) > 0 for k in ks]
                     if listed else market.listed_strikes(u))
            out += [Instrument(u, "option", "inverse", e, k, right) for e, k in pairs for right in ("call", "put")]
    return out


@dataclasses.dataclass
class HedgeMap:
    """The map of one account: ``instruments`` (the listed contracts, in listing order), ``marginal[method]``
    (d headline / d quantity per contract, margin currency per coin) and ``headline[method]`` (the account's
    figure: span total, deribit initial, var es)."""

    instruments: list[Instrument]
    marginal: dict[str, np.ndarray]
    headline: dict[str, float]
    currency: str

    def rows(self) -> list[dict]:
        """SPEC section 7's rows: ``{"instrument", "marginal": {method: value}}`` per listed contract."""
        return [{"instrument": inst.name, "marginal": {m: float(v[i]) for m, v in self.marginal.items()}}
                for i, inst in enumerate(self.instruments)]

    def ranked(self, method: str, n: int = 10) -> tuple[list[int], list[int]]:
        """(the n contracts whose purchase lowers the margin most, the n that raise it most), as indices."""
        order = np.argsort(self.marginal[method], kind="stable")
        return order[:n].tolist(), order[::-1][:n].tolist()


def _with_quantities(book, q):
    return eqx.tree_at(lambda b: b.quantity, book, q)


@jax.jit
def span_gradient(book, params):
    """(SPAN total, d total / d quantity per row) of ``book``."""
    return jax.value_and_grad(lambda q: span_margin(_with_quantities(book, q), params).total)(book.quantity)


@jax.jit
def deribit_gradient(book, params):
    """(Deribit initial margin, d initial / d quantity per row) of ``book``."""
    return jax.value_and_grad(lambda q: deribit_margin(_with_quantities(book, q), params).initial)(book.quantity)


def extended_book(portfolio: Portfolio, market: Market, instruments: list[Instrument], *, dtype):
    """(book of the account's positions followed by every contract of ``instruments`` it does not hold, at
    quantity 0; the row of each contract)."""
    held = {p.instrument: i for i, p in enumerate(portfolio.positions)}
    extra = [inst for inst in instruments if inst not in held]
    resolved = resolve(portfolio.instruments + extra, [p.quantity for p in portfolio.positions] + [0.0] * len(extra),
                       market)
    rows = {**held, **{inst: len(held) + j for j, inst in enumerate(extra)}}
    book = make_book(resolved, market, portfolio.margin_currency, dtype=dtype, size=bucket_size(len(resolved)))
    return book, np.array([rows[inst] for inst in instruments])


def hedge_map(portfolio: Portfolio, market: Market, config: dict | None = None, *, methods=("span", "deribit"),
              kinds=KINDS, dtype=jnp.float64, paths: int | None = None, seed: int | None = None) -> HedgeMap:
    """The marginal margin map of ``portfolio`` over every listed contract (module docstring)."""
    bad = [m for m in methods if m not in MAP_METHODS]
    if bad:
        raise InputError(f"no marginal map for {', '.join(bad)} (maps: {', '.join(MAP_METHODS)}; rules margin "
                         "pairs strategies and has no derivative)", source="--method")
    config = load_config() if config is None else config
    instruments = listed_contracts(market, kinds)
    if not instruments:
        raise InputError("the market lists no contract of the kinds asked for", source="--instruments")
    book, rows = extended_book(portfolio, market, instruments, dtype=dtype)
    marginal, headline = {}, {}
    if "span" in methods:
        total, grad = span_gradient(book, span_params(config, dtype=dtype))
        headline["span"], marginal["span"] = float(total), np.asarray(grad, np.float64)[rows]
    if "deribit" in methods:
        initial, grad = deribit_gradient(book, deribit_params(config, dtype=dtype))
        headline["deribit"], marginal["deribit"] = float(initial), np.asarray(grad, np.float64)[rows]
    if "var" in methods:
        headline["var"], marginal["var"] = _var_marginal(portfolio, market, config, book, rows, dtype, paths, seed)
    return HedgeMap(instruments, marginal, headline, portfolio.margin_currency)


def _var_marginal(portfolio, market, config, book, rows, dtype, paths, seed):
    """(ES, d ES / d quantity of each contract): the tail paths of the account's own run held fixed, each
    contract's mean loss per coin over them (``montecarlo.tail_allocation`` of a book of one coin each)."""
    params = var_params(config, market=market, dtype=dtype, paths=paths, seed=seed, historical=False)
    held, _ = book_from_portfolio(portfolio, market, dtype=dtype)
    result = var_margin(held, params)
    s = params.settings
    ones = _with_quantities(book, jnp.ones_like(book.quantity))
    _, per_coin = montecarlo.tail_allocation(ones, params.model, params.scenario, seed=s.seed,
                                             indices=result.estimate.tail, chunk=256)
    return result.estimate.es, np.asarray(per_coin, np.float64)[rows]


def hedge_map_section(hmap: HedgeMap, *, top: int = 10) -> dict:
    """SPEC section 7's ``pmjax hedge-map --json`` document plus, per method, the headline and the ``top``
    contracts whose purchase lowers (``best``) and raises (``worst``) the margin most."""
    doc = {"method": ",".join(hmap.marginal), "methods": list(hmap.marginal), "currency": hmap.currency,
           "headline": hmap.headline, "contracts": len(hmap.instruments), "rows": hmap.rows()}
    for m in hmap.marginal:
        best, worst = hmap.ranked(m, top)
        doc.setdefault("ranked", {})[m] = {
            "best": [{"instrument": hmap.instruments[i].name, "marginal": float(hmap.marginal[m][i])} for i in best],
            "worst": [{"instrument": hmap.instruments[i].name, "marginal": float(hmap.marginal[m][i])}
                      for i in worst]}
    return doc


def plot_marginal_by_strike(hmap: HedgeMap, method: str, underlying: str) -> bytes:
    """PNG: ``method``'s marginal margin of ``underlying``'s listed options against strike, one line per expiry
    (calls solid, puts dashed); margin currency per coin bought."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    expiries = sorted({i.expiry for i in hmap.instruments if i.is_option and i.underlying == underlying})
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(expiries), 1)))
    for colour, expiry in zip(colours, expiries):
        for right, style in (("call", "-"), ("put", "--")):
            pts = sorted((i.strike, hmap.marginal[method][j]) for j, i in enumerate(hmap.instruments)
                         if i.is_option and i.underlying == underlying and i.expiry == expiry and i.right == right)
            label = f"{expiry:%d%b%y}".upper() if right == "call" else None  # one legend entry per expiry
            if pts:
                ax.plot(*zip(*pts), style, color=colour, lw=1.2, label=label)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel(f"{underlying} strike (USD)")
    ax.set_ylabel(f"d {method} / d quantity ({hmap.currency} per coin)")
    ax.set_title(f"{method}: marginal margin of each listed {underlying} option (calls solid, puts dashed)")
    ax.legend(fontsize=7, ncol=2, title="expiry", title_fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()

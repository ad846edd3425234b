"""Whether an account may use portfolio margin: its equity (collateral plus position values) against
``rules.pm_minimum_equity``. Formulas: docs/methodology.md section 8.5."""

from __future__ import annotations

from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio
from pmjax.measures.rules import option_marks, rules_params


def usd_per_unit(currency: str, market: Market) -> float:
    """USD value of one unit of ``currency`` (USD and USDC: 1; a coin: its index)."""
    return 1.0 if currency in ("USD", "USDC") else market.spot(currency)


def account_equity(portfolio: Portfolio, market: Market, collateral: dict[str, float] | None = None, *,
                   dtype=None, marks: dict[str, float] | None = None) -> float:
    """Collateral plus position values, in the portfolio's margin currency.

    Position values: options at their mark, spot at the index, futures and perpetuals 0 (their value is
    the P&L since entry, which a portfolio file does not record). ``marks``: ``rules.option_marks`` of the
    portfolio at ``dtype``, if at hand.
    """
    marks = option_marks(portfolio, market, dtype) if marks is None else marks
    usd = sum(a * usd_per_unit(c, market) for c, a in (collateral or {}).items())
    for p in portfolio.positions:
        inst = p.instrument
        if inst.is_option:
            usd += p.quantity * marks[inst.name]
        elif inst.kind == "spot":
            usd += p.quantity * market.spot(inst.underlying)
    return usd / usd_per_unit(portfolio.margin_currency, market)


def qualifies_for_pm(equity: float, config: dict, currency: str, market: Market) -> tuple[bool, str]:
    """Whether an account with ``equity`` (in ``currency``) meets ``rules.pm_minimum_equity``; (ok, reason)."""
    amount, cur = rules_params(config).pm_minimum_equity
    minimum = amount * usd_per_unit(cur, market) / usd_per_unit(currency, market)
    ok = equity >= minimum
    shown = f"{amount:,.8g} {cur}" + ("" if cur == currency else f" = {minimum:,.8g} {currency}")
    verdict = "meets" if ok else "is below"
    return ok, f"equity {equity:,.8g} {currency} {verdict} the portfolio-margin minimum {shown} (rules.pm_minimum_equity)"


def pm_qualification(portfolio: Portfolio, market: Market, config: dict,
                     collateral: dict[str, float] | None = None, *, dtype=None, marks=None) -> dict:
    """{"equity", "minimum", "currency", "qualifies", "reason"}: the account's equity (collateral plus
    position values) against ``rules.pm_minimum_equity``, both in the portfolio's margin currency."""
    cur = portfolio.margin_currency
    equity = account_equity(portfolio, market, collateral, dtype=dtype, marks=marks)
    amount, min_cur = rules_params(config).pm_minimum_equity
    ok, reason = qualifies_for_pm(equity, config, cur, market)
    return {"equity": equity, "minimum": amount * usd_per_unit(min_cur, market) / usd_per_unit(cur, market),
            "currency": cur, "qualifies": ok, "reason": reason}


def qualification(portfolio: Portfolio, market: Market, config: dict, *, dtype, marks=None) -> dict:
    """Whether the account may use portfolio margin (equity = collateral + position values against
    ``rules.pm_minimum_equity``); below it the account is margined by rules, and ``applies`` says so."""
    q = pm_qualification(portfolio, market, config, portfolio.collateral, dtype=dtype, marks=marks)
    applies = "portfolio margin" if q["qualifies"] else "rules"
    return {**q, "applies": applies, "reason": q["reason"] + f"; margined by {applies}"}

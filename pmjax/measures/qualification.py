"""Whether an account may use portfolio margin (equity against ``rules.pm_minimum_equity``)."""

from __future__ import annotations

from pmjax.core.market import Market
from pmjax.core.portfolio import Portfolio


def qualification(portfolio: Portfolio, market: Market, config: dict, *, dtype) -> dict:
    """Whether the account may use portfolio margin (equity = collateral + position values against
    ``rules.pm_minimum_equity``); below it the account is margined by rules, and ``applies`` says so."""
    from pmjax.measures.rules import pm_qualification

    q = pm_qualification(portfolio, market, config, portfolio.collateral, dtype=dtype)
    applies = "portfolio margin" if q["qualifies"] else "rules"
    return {**q, "applies": applies, "reason": q["reason"] + f"; margined by {applies}"}

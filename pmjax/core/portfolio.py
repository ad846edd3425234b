"""Portfolios: an account's positions, its margin currency and collateral. Loading lives in
``pmjax.io.portfolio``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS, Instrument

MARGIN_CURRENCIES: tuple[str, ...] = ("USD",) + UNDERLYINGS


@dataclasses.dataclass(frozen=True)


class Position:
    instrument: Instrument
    quantity: float  # coins of the underlying; negative = short


@dataclasses.dataclass


class Portfolio:
    """One account. ``notices`` collects what loading changed (merged duplicates)."""

    positions: list[Position]
    account: str = "account"
    margin_currency: str = "USD"
    source: str | None = None
    notices: list[str] = dataclasses.field(default_factory=list)
    collateral: dict[str, float] = dataclasses.field(default_factory=dict)  # currency (USD, BTC, ETH) -> amount
    #: instrument -> (source, field) where it was first given, e.g. (path, "positions[3].instrument"), so that
    #: an error found later (an instrument expired before the market's as_of) names the file and position
    origins: dict[Instrument, tuple[str | None, str]] = dataclasses.field(default_factory=dict)

    def origin(self, instrument: Instrument) -> tuple[str | None, str | None]:
        """(source, field) of ``instrument`` in the input; (source, "positions") when not recorded."""
        return self.origins.get(instrument, (self.source, "positions" if self.source else None))

    @property
    def instruments(self) -> list[Instrument]:
        return [p.instrument for p in self.positions]

    def with_trades(self, trades: Iterable[Position]) -> "Portfolio":
        """A copy with ``trades`` added (merged into existing positions of the same instrument)."""
        return make_portfolio(list(self.positions) + list(trades), account=self.account,
                              margin_currency=self.margin_currency, source=self.source, allow_empty=True,
                              merge_notice=False, collateral=self.collateral, origins=self.origins)


def make_portfolio(positions: list[Position], *, account="account", margin_currency="USD", source=None,
                   allow_empty=False, merge_notice=True, collateral=None, origins=None) -> Portfolio:
    """Merge duplicate instruments (with a notice) and validate the margin currency."""
    mc = str(margin_currency).upper()
    if mc not in MARGIN_CURRENCIES:
        raise InputError(f"margin_currency must be one of {', '.join(MARGIN_CURRENCIES)}, got {margin_currency!r}",
                         source=source, field="margin_currency")
    merged: dict[Instrument, float] = {}
    counts: dict[Instrument, int] = {}
    for p in positions:
        merged[p.instrument] = merged.get(p.instrument, 0.0) + p.quantity
        counts[p.instrument] = counts.get(p.instrument, 0) + 1
    notices = [f"{source or 'portfolio'}: {n} positions in {i.name} merged into one of quantity {merged[i]:g}"
               for i, n in counts.items() if n > 1 and merge_notice]
    if not merged and not allow_empty:
        raise InputError("portfolio has no positions", source=source, field="positions")
    return Portfolio([Position(i, q) for i, q in merged.items()], str(account), mc, source, notices,
                     dict(collateral or {}), dict(origins or {}))

"""The one abstraction every scenario set shares: a set turns a book into a batch of ``Shock``s.

``ScenarioSet.shocks(book)`` gives a ``pmjax.core.kernel.Shock`` whose every field carries a leading
scenario axis (s,); ``ScenarioSet.pnl(book)`` values each position under each of them, (s, n) in the
book's margin currency, gain positive. Implemented by the SPAN grid (``grids.Grid``), the Deribit grid
(``grids.DeribitGrid``), named joint moves (``named.NamedScenarios``) and historical days
(``historical.HistoricalScenarios``). Formulas for the kernel:
docs/methodology.md section 3.
"""

from __future__ import annotations

import abc

import equinox as eqx
from jaxtyping import Array, Float

from pmjax.core.book import Book
from pmjax.core.kernel import Shock, scenario_pnl


class ScenarioSet(eqx.Module):
    """A set of market scenarios as data (an ``eqx.Module``: jit, vmap and shard it like any pytree)."""

    @abc.abstractmethod
    def shocks(self, book: Book) -> Shock:
        """The scenarios as one ``Shock`` with a leading scenario axis (s,) on every field, for ``book``."""

    def pnl(self, book: Book) -> Float[Array, "s n"]:
        """P&L of every position (margin currency, gain positive) under every scenario."""
        return scenario_pnl(book, self.shocks(book))

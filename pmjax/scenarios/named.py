"""Named joint scenarios (stress days, user files): a move of every underlying's price and implied vol.

``load_scenarios`` reads them as ``StressScenario``s; ``named_scenarios`` turns a list into a
``NamedScenarios`` set (a ``base.ScenarioSet``: scenario s moves every underlying at once). Formulas:
docs/methodology.md section 3.4.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jaxtyping import Array, Float

from pmjax.core.book import Book
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.validate import finite_number
from pmjax.core.kernel import Shock
from pmjax.core.units import DAYS_PER_YEAR
from pmjax.io.documents import read_document
from pmjax.scenarios.base import ScenarioSet
from pmjax.scenarios.grids import VOL_FLOOR


@dataclasses.dataclass(frozen=True)
class StressScenario:
    """A joint move of every underlying at once: spot (fraction) and implied vol (absolute) shifts."""

    name: str
    price_move: tuple[float, ...]  # per underlying in UNDERLYINGS order
    vol_shift: tuple[float, ...]
    days: float = 0.0


def load_scenarios(path: str) -> list[StressScenario]:
    """Named scenarios from YAML/JSON: a list (or ``scenarios:`` list) of
    ``{name, days (default 0), moves: {BTC: {price: -0.30, vol: 0.20}, ...}}``; price is a fractional
    move of spot and every forward (> -1), vol an absolute shift of every implied vol (floored at 1%)."""
    doc = read_document(path)
    if isinstance(doc, dict) and "scenarios" in doc:
        doc = doc["scenarios"]
    if not isinstance(doc, list) or not doc:
        raise InputError("scenarios must be a non-empty list of {name, moves}", source=path)
    out, names = [], set()
    for i, s in enumerate(doc):
        where = f"scenarios[{i}]"
        if not isinstance(s, dict):
            raise InputError("a scenario must be a mapping with name and moves", source=path, field=where)
        name = str(s.get("name", f"scenario-{i + 1}"))
        if name in names:
            raise InputError(f"duplicate scenario name {name!r}", source=path, field=f"{where}.name")
        names.add(name)
        moves = s.get("moves") or {}
        if not isinstance(moves, dict):
            raise InputError("moves must be a mapping of underlying -> {price, vol}", source=path,
                             field=f"{where}.moves")
        price, vol = [0.0] * len(UNDERLYINGS), [0.0] * len(UNDERLYINGS)
        for u, mv in moves.items():
            f = f"{where}.moves.{u}"
            if str(u).upper() not in UNDERLYINGS:
                raise InputError(f"unknown underlying {u!r} (known: {', '.join(UNDERLYINGS)})", source=path, field=f)
            if not isinstance(mv, dict):
                raise InputError("a move must be a mapping {price, vol}", source=path, field=f)
            unknown = set(mv) - {"price", "vol"}
            if unknown:
                raise InputError(f"unknown key {sorted(unknown)[0]!r} (use price, vol)", source=path, field=f)
            j = UNDERLYINGS.index(str(u).upper())
            price[j] = finite_number(mv.get("price", 0.0), source=path, field=f"{f}.price")
            vol[j] = finite_number(mv.get("vol", 0.0), source=path, field=f"{f}.vol")
            if price[j] <= -1.0:
                raise InputError(f"a price move must be > -1 (-100%), got {price[j]:g}", source=path,
                                 field=f"{f}.price")
        days = finite_number(s.get("days", 0.0), source=path, field=f"{where}.days")
        if days < 0:
            raise InputError(f"days must be >= 0, got {days:g}", source=path, field=f"{where}.days")
        out.append(StressScenario(name, tuple(price), tuple(vol), days))
    return out


class NamedScenarios(ScenarioSet):
    """Joint moves as arrays: in scenario s spot and every forward of underlying u scale by
    1 + ``price_move[s, u]``, each position's vol shifts by ``vol_shift[s, u]`` of its underlying
    (floored at ``vol_floor``) and time advances ``dt[s]`` years."""

    price_move: Float[Array, "s u"]  # fraction of spot
    vol_shift: Float[Array, "s u"]  # absolute vol
    dt: Float[Array, " s"]  # years
    vol_floor: Float[Array, ""]

    def shocks(self, book: Book) -> Shock:
        """One ``Shock`` per scenario (leading axis s) for ``book``."""
        floor = jnp.broadcast_to(self.vol_floor, self.dt.shape)
        return Shock(1.0 + self.price_move, self.vol_shift[:, book.underlying], self.dt, floor)


def named_scenarios(scenarios: list[StressScenario], *, dtype=jnp.float64) -> NamedScenarios:
    """The ``NamedScenarios`` set of ``scenarios`` (e.g. from ``load_scenarios``), in their order."""
    return NamedScenarios(price_move=jnp.asarray([s.price_move for s in scenarios], dtype),
                          vol_shift=jnp.asarray([s.vol_shift for s in scenarios], dtype),
                          dt=jnp.asarray([s.days / DAYS_PER_YEAR for s in scenarios], dtype),
                          vol_floor=jnp.asarray(VOL_FLOOR, dtype))

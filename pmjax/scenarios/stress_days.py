"""Named historical stress days as joint scenarios (the ``pmjax stress --scenarios`` format).

Each day's move is its realized close-to-close change, from the bundled history:

- price: the simple return P(d) / P(d - 1) - 1 of the Binance daily close (the candle of UTC day d
  against the day before), per underlying;
- vol: the absolute change DVOL(d) - DVOL(d - 1) of Deribit's 30-day implied-vol index (decimal);
- days: 1 (the move took one day, so options lose a day of time value in the scenario).

DVOL starts on 2021-03-24. For an earlier day the vol move is a documented proxy: the fitted
spot-vol response of DVOL over its whole history, the least-squares fit
dDVOL = c + b_down min(R, 0) + b_up max(R, 0) on the same day's return R (implied vol rises when
the price falls), evaluated at that day's return. ``configs/scenarios/stress_days.yaml`` is the output of
``python -m pmjax.scenarios.stress_days configs/scenarios/stress_days.yaml``. Formulas: docs/methodology.md
section 3.4.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from pmjax.io import history
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS

#: the named days: the date (UTC) and what happened
STRESS_DAYS = {
    "2020-03-12": "covid crash",
    "2021-05-19": "china mining ban sell-off",
    "2022-06-13": "celsius withdrawal freeze",
    "2022-11-09": "ftx collapse",
}


@dataclasses.dataclass(frozen=True)
class VolProxy:
    """dDVOL = intercept + down min(R, 0) + up max(R, 0), fitted on the common days of closes and DVOL."""

    intercept: float
    down: float
    up: float
    start: str
    end: str
    days: int

    def __call__(self, r: float) -> float:
        return self.intercept + self.down * min(r, 0.0) + self.up * max(r, 0.0)


def fit_vol_proxy(closes: history.Series, dvol: history.Series) -> VolProxy:
    """Least-squares spot-vol response of DVOL's daily change to the daily simple return."""
    j = history.align([closes, dvol])
    one_day = (j.dates[1:] - j.dates[:-1]).astype(np.int64) == 1
    r = (j.values[1:, 0] / j.values[:-1, 0] - 1.0)[one_day]
    dv = np.diff(j.values[:, 1])[one_day]
    x = np.stack([np.ones_like(r), np.minimum(r, 0.0), np.maximum(r, 0.0)], axis=1)
    b, *_ = np.linalg.lstsq(x, dv, rcond=None)
    return VolProxy(float(b[0]), float(b[1]), float(b[2]), str(j.dates[0]), str(j.dates[-1]), int(one_day.sum()))


def _value_on(s: history.Series, day: np.datetime64) -> float | None:
    i = int(np.searchsorted(s.dates, day))
    return float(s.values[i]) if i < len(s) and s.dates[i] == day else None


def day_move(closes: history.Series, dvol: history.Series, day, proxy: VolProxy | None = None) -> dict:
    """``{price, vol, vol_source}`` of one day: the close-to-close return and DVOL change (or the proxy)."""
    d = history.as_day(day)
    prev = d - np.timedelta64(1, "D")
    p1, p0 = _value_on(closes, d), _value_on(closes, prev)
    if p1 is None or p0 is None:
        raise InputError(f"no {closes.name} close on {prev} and {d}", source=closes.source)
    price = p1 / p0 - 1.0
    v1, v0 = _value_on(dvol, d), _value_on(dvol, prev)
    if v1 is not None and v0 is not None:
        return {"price": price, "vol": v1 - v0, "vol_source": "dvol"}
    proxy = proxy or fit_vol_proxy(closes, dvol)
    return {"price": price, "vol": proxy(price), "vol_source": "proxy"}


def stress_day_scenarios(days: dict[str, str] | None = None) -> list[dict]:
    """The named days as scenarios ``{name, days, moves: {U: {price, vol}}}`` plus ``vol_source`` per
    underlying (``dvol`` or ``proxy``) and ``date`` (both ignored by ``load_scenarios``)."""
    days = STRESS_DAYS if days is None else days
    closes = {u: history.bundled_close(u) for u in UNDERLYINGS}
    dvols = {u: history.bundled_dvol(u) for u in UNDERLYINGS}
    proxies = {u: fit_vol_proxy(closes[u], dvols[u]) for u in UNDERLYINGS}
    out = []
    for date, what in days.items():
        moves = {u: day_move(closes[u], dvols[u], date, proxies[u]) for u in UNDERLYINGS}
        out.append({"name": f"{date} {what}", "date": date, "days": 1,
                    "moves": {u: {"price": m["price"], "vol": m["vol"]} for u, m in moves.items()},
                    "vol_source": {u: m["vol_source"] for u, m in moves.items()}})
    return out


def stress_days_yaml(days: dict[str, str] | None = None) -> str:
    """The scenarios as commented YAML (the file shipped as configs/scenarios/stress_days.yaml)."""
    closes = {u: history.bundled_close(u) for u in UNDERLYINGS}
    dvols = {u: history.bundled_dvol(u) for u in UNDERLYINGS}
    proxies = {u: fit_vol_proxy(closes[u], dvols[u]) for u in UNDERLYINGS}
    lines = [
        "# Named historical stress days for `pmjax stress ACCOUNTS --scenarios configs/scenarios/stress_days.yaml`",
        "# (the format of pmjax.scenarios.named.load_scenarios). Written by `python -m pmjax.scenarios.stress_days",
        "# configs/scenarios/stress_days.yaml` from the bundled history (pmjax/data/history): each move is that UTC day's",
        "# close-to-close change, price = Binance close(d) / close(d-1) - 1, vol = Deribit DVOL close(d) - close(d-1)",
        "# (absolute, decimal vol); days: 1 (the move took one day).",
        "# DVOL starts 2021-03-24: for earlier days the vol move is a proxy, the least-squares spot-vol response",
        "# dDVOL = c + b_down min(R, 0) + b_up max(R, 0) fitted on the days with both closes and DVOL:",
    ]
    for u, p in proxies.items():
        lines.append(f"#   {u}: c = {p.intercept:.5f}, b_down = {p.down:.4f}, b_up = {p.up:.4f} "
                     f"({p.days} days, {p.start} .. {p.end})")
    lines.append("# Kept in configs/scenarios/, which the defaults (configs/*.yaml) do not merge.")
    lines.append("scenarios:")
    for s in stress_day_scenarios(days):
        src = ", ".join(f"{u} vol {v}" for u, v in s["vol_source"].items())
        lines.append(f"  - name: {s['name']}   # {src}")
        lines.append(f"    days: {s['days']}")
        lines.append("    moves:")
        for u, m in s["moves"].items():
            lines.append(f"      {u}: {{price: {m['price']:.6f}, vol: {m['vol']:.6f}}}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """``python -m pmjax.scenarios.stress_days [OUT.yaml]``: the stress-day scenarios as YAML."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m pmjax.scenarios.stress_days",
                                description="named stress days from the bundled history, as scenario YAML")
    p.add_argument("out", nargs="?", help="file to write (default: standard output)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    text = stress_days_yaml()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


__all__ = ["STRESS_DAYS", "VolProxy", "day_move", "fit_vol_proxy", "stress_day_scenarios", "stress_days_yaml"]

if __name__ == "__main__":
    sys.exit(main())

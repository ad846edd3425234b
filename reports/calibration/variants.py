"""The rule's variants tried before the defaults were chosen, rerun with the library (in and out of sample).

    python reports/calibration/variants.py > reports/calibration/variants.txt

Calibrated on the bundled history up to 2021-12-31 (the split), each range set at a close and applied one day
later (lag 0 where stated). Defaults were chosen on the in-sample rows (price: 2018-09 .. 2021-12; the vol range
has no in-sample test day at this split), but the out-of-sample rows were printed alongside (see README.md).
"""

import dataclasses

from pmjax.apps import calibrate as C
from pmjax.apps.tables import table

SPLIT = "2021-12-31"
BASE = C.CalibrationSettings()
VARIANTS = [("defaults (floor, EWMA 0.94, lag 1)", {}),
            ("lag 0", {"lag_days": 0}),
            ("EWMA 0.97", {"ewma_lambda": 0.97, "vol_ewma_lambda": 0.97}),
            ("no APC tool", {"price_apc": (), "vol_apc": ()}),
            ("buffer", {"price_apc": ("buffer",), "vol_apc": ("buffer",)}),
            ("stress", {"price_apc": ("stress",), "vol_apc": ("stress",)}),
            ("floor + buffer", {"price_apc": ("floor", "buffer"), "vol_apc": ("floor", "buffer")}),
            ("floor + stress", {"price_apc": ("floor", "stress"), "vol_apc": ("floor", "stress")}),
            ("floor + stress + buffer", {"price_apc": ("floor", "stress", "buffer"),
                                         "vol_apc": ("floor", "stress", "buffer")}),
            ("GARCH(1,1), refit every 91 days", {"volatility_model": "garch"})]


def fmt(b):
    if b is None:
        return ["-", "", "", ""]
    c = b["christoffersen_p"]
    return [f"{b['exceedances']}/{b['expected']:.1f}", f"{b['kupiec_p']:.3f}", "n/a" if c is None else f"{c:.4f}",
            b["traffic_light"]]


data = C.load_history([C.BUNDLED])
rows = []
for name, change in VARIANTS:
    cal = C.calibrate(data, dataclasses.replace(BASE, **change), split=SPLIT)
    for u, e in cal.doc["underlyings"].items():
        pc = e["procyclicality"]
        rows.append([name, u, "price"] + fmt(e["backtest"]) + fmt(e["backtest_oos"])
                    + [f"{pc['price']['peak_to_trough']:.1f}", f"{pc['price']['max_increase_10d']:.2f}"])
        rows.append([name, u, "vol"] + fmt(e["vol_backtest"]) + fmt(e["vol_backtest_oos"])
                    + [f"{pc['vol']['peak_to_trough']:.1f}", f"{pc['vol']['max_increase_10d']:.2f}"])
print(table(rows, ["variant", "und", "range", "IS exc/exp", "IS kupiec", "IS christ.", "IS light", "OOS exc/exp",
                   "OOS kupiec", "OOS christ.", "OOS light", "peak/trough", "10-day x"],
            title=f"variants, split {SPLIT}: kupiec = exact one-sided P(X >= x); christ. = Christoffersen "
                  "(Monte Carlo up to 20 exceedances, n/a below 2)"))

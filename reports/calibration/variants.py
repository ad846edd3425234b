"""Variants of the daily rule and of the through-the-cycle (TTC) rule, rerun with the library (in and out of sample).

    python reports/calibration/variants.py > reports/calibration/variants.txt

Calibrated on the bundled history up to 2021-12-31 (the split), each range set at a close and applied one day
later (lag 0 where stated). The daily rule's defaults were chosen on the in-sample rows (price: 2018-09 .. 2021-12;
its vol range has no in-sample test day at this split), but the out-of-sample rows were printed alongside (see
README.md). The TTC rule's stress weighting (25% on the most stressed 60 days) was chosen after both the in-sample
and the out-of-sample rows of about 24 TTC variants had been seen: the out-of-sample figures are not clean.
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
TTC_VARIANTS = [("TTC defaults (quarterly, buffer 25%, stress 25% on 60 days)", {}),
                ("TTC no stress weighting (the defaults before issue 19's second pass)", {"ttc_stress_weight": 0.0}),
                ("TTC stress 25% on 90 days", {"ttc_stress_window_days": 90}),
                ("TTC stress 25% on 365 days", {"ttc_stress_window_days": 365}),
                ("TTC stress 35% on 90 days", {"ttc_stress_weight": 0.35, "ttc_stress_window_days": 90}),
                ("TTC stress 50% on 180 days", {"ttc_stress_weight": 0.5, "ttc_stress_window_days": 180}),
                ("TTC no buffer", {"apc_buffer": 0.0}),
                ("TTC monthly", {"ttc_reset": "monthly"}),
                ("TTC annual", {"ttc_reset": "annual"})]


def fmt(b):
    if b is None:
        return ["-", "", "", ""]
    c = b["christoffersen_p"]
    return [f"{b['exceedances']}/{b['expected']:.1f}", f"{b['kupiec_p']:.3f}", "n/a" if c is None else f"{c:.4f}",
            b["traffic_light"]]


def rows_of(variants, prefix, pc_prefix):
    rows = []
    for name, change in variants:
        cal = C.calibrate(data, dataclasses.replace(BASE, **change), split=SPLIT)
        for u, e in cal.doc["underlyings"].items():
            for what, key in (("price", "backtest"), ("vol", "vol_backtest")):
                pc = e["procyclicality"][pc_prefix + what]
                b = e[prefix + key]
                cost = "" if b is None or b.get("cost_vs_daily") is None else f"{b['cost_vs_daily']:.2f}"
                oos = e[prefix + key + "_oos"]
                rows.append([name, u, what] + fmt(b) + fmt(oos) + [f"{pc['peak_to_trough']:.1f}",
                            f"{pc['max_increase_10d']:.2f}", cost or ("" if oos is None or oos.get("cost_vs_daily")
                                                                       is None else f"{oos['cost_vs_daily']:.2f}")])
    return rows


HEAD = ["variant", "und", "range", "IS exc/exp", "IS kupiec", "IS christ.", "IS light", "OOS exc/exp", "OOS kupiec",
        "OOS christ.", "OOS light", "peak/trough", "10-day x", "x daily"]
data = C.load_history([C.BUNDLED])
print(table(rows_of(VARIANTS, "daily_", "daily_"), HEAD,
            title=f"daily-rule variants, split {SPLIT}: kupiec = exact one-sided P(X >= x); christ. = Christoffersen "
                  "(Monte Carlo up to 20 exceedances, n/a below 2)"))
print()
print(table(rows_of(TTC_VARIANTS, "", ""), HEAD,
            title=f"through-the-cycle variants, split {SPLIT}, re-set on schedule after it too; x daily = mean range "
                  "over the daily rule's, out of sample (in sample for prices)"))

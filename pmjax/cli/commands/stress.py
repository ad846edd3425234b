"""``pmjax stress ACCOUNTS --market M [--method span,deribit,var] [--config C] [--scenarios F] [--paths N]
[--seed S] [--confidence A]``

Many accounts in jitted, vmapped calls per method, in chunks sized from the memory at hand
(``pmjax.batch.sharding.span_chunk``, ``deribit_chunk``, ``stress_chunk``) and sharded over every local device.
``stress_methods.METHODS`` maps a method name to a batch function ``(AccountBatch, Market, config, dtype) ->
MethodOutput``; another method is added by registering its batch function there and its name in ``METHODS`` here
(the parser shows these names without importing JAX).
"""

from __future__ import annotations

import time

from pmjax.cli.app import dtype_of, notices
from pmjax.cli.commands.margin import var_overrides
from pmjax.core.errors import InputError
from pmjax.core.instruments import UNDERLYINGS
from pmjax.io.names import DEFAULT_MARKET

#: the margin methods of ``pmjax stress`` (the keys of ``pmjax.cli.commands.stress_methods.METHODS``)
METHODS = ("span", "deribit", "var", "tims")


def add_arguments(p):
    p.add_argument("accounts", metavar="ACCOUNTS",
                   help="a directory of portfolio files, or a multi-account YAML/JSON file (accounts: [...])")
    p.add_argument("--market", default=DEFAULT_MARKET,
                   help=f"market file (YAML/JSON/Deribit chain CSV) or bundled name (default {DEFAULT_MARKET})")
    p.add_argument("--method", default="span",
                   help=f"comma-separated margin methods to run (available: {', '.join(METHODS)}; default span)")
    p.add_argument("--config", default=None, help="config YAML/JSON merged over the defaults in configs/")
    p.add_argument("--paths", type=int, default=None, help="var: Monte Carlo paths (default var.paths), shared by "
                   "every account")
    p.add_argument("--seed", type=int, default=None, help="var: random seed (default var.seed)")
    p.add_argument("--confidence", type=float, default=None, help="var: confidence (default var.confidence)")
    p.add_argument("--scenarios", default=None, metavar="F",
                   help="YAML/JSON list of named joint shocks {name, days, moves: {BTC: {price: -0.3, vol: 0.2}}}: "
                        "reports each account's P&L under each")
    p.add_argument("--risk-parameter-file", default=None, metavar="PATH",
                   help="also write the market's SPAN risk parameter file (per-contract risk arrays) to PATH "
                        "(.json or .yaml: SPEC section 6, loadable by --risk-parameters; .csv: a table)")
    p.add_argument("--risk-parameters", dest="risk_parameters", default=None, metavar="FILE",
                   help="SPAN of every account on an exchange's risk arrays (SPEC section 6) instead of pmjax's "
                        "pricing: positions name its contracts")


def _methods(text: str) -> list[str]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if not names:
        raise InputError("no method given", source="--method")
    for m in names:
        if m not in METHODS:
            raise InputError(f"unknown method {m!r} (available: {', '.join(METHODS)})", source="--method")
    return list(dict.fromkeys(names))


def run_supplied(args):
    """``--risk-parameters``: SPAN of every account on the file's arrays, in one vmapped call."""
    from pmjax.apps.supplied import load_contract_accounts, supplied_stress
    from pmjax.apps.tables import table
    from pmjax.io.span_pa2 import load_risk_file

    if _methods(args.method) != ["span"]:
        raise InputError("with --risk-parameters only span is computed (the file's arrays replace pmjax's pricing)",
                         source="--method")
    for flag in ("scenarios", "risk_parameter_file"):
        if getattr(args, flag, None):
            raise InputError("does not apply with --risk-parameters", source="--" + flag.replace("_", "-"))
    rp = load_risk_file(args.risk_parameters)
    portfolios = load_contract_accounts(args.accounts, rp)
    start = time.perf_counter()
    sections = supplied_stress(portfolios, rp, dtype=dtype_of(args))
    elapsed = time.perf_counter() - start
    accounts = [{"account": p.account, "currency": rp.currency, "positions": len(p.positions), "span": s}
                for p, s in zip(portfolios, sections)]
    doc = {"risk_parameters": rp.source, "currency": rp.currency, "methods": ["span"], "accounts": accounts}
    rows = [[p.account, rp.currency, len(p.positions), sum(b["scan_risk"] for b in s["by_underlying"].values()),
             s["total"], " ".join(f"{c}:{b['worst_scenario']}" for c, b in s["by_underlying"].items())]
            for p, s in zip(portfolios, sections)]
    return doc, table(rows, ["account", "ccy", "positions", "span scan risk", "span total", "worst scenario"],
                      title=f"{len(portfolios)} accounts on the risk arrays of {rp.source}, span in {elapsed:.2f} s")


def run(args):
    if getattr(args, "risk_parameters", None) is not None:
        return run_supplied(args)
    from pmjax.apps.risk_file import risk_parameter_file
    from pmjax.apps.stress import stress_pnl
    from pmjax.apps.tables import table
    from pmjax.batch.accounts import build_batch
    from pmjax.cli.commands.stress_methods import METHODS as RUN
    from pmjax.io.accounts import load_accounts
    from pmjax.io.config import load_config
    from pmjax.io.market import load_market
    from pmjax.scenarios.named import load_scenarios

    methods = _methods(args.method)
    dtype = dtype_of(args)
    config = var_overrides(args, load_config(args.config))
    market = load_market(args.market)
    portfolios = load_accounts(args.accounts)
    scenarios = load_scenarios(args.scenarios) if args.scenarios else []
    notices(market.notices + [n for p in portfolios for n in p.notices])  # stderr, with or without --json
    start = time.perf_counter()
    batch = build_batch(portfolios, market, dtype=dtype)
    outputs = {m: RUN[m](batch, market, config, dtype) for m in methods}
    pnl = stress_pnl(batch, scenarios) if scenarios else None
    elapsed = time.perf_counter() - start

    accounts = []
    for i, p in enumerate(portfolios):
        a = {"account": p.account, "currency": p.margin_currency, "positions": len(p.positions)}
        for m, out in outputs.items():
            a[m] = out.sections[i]
        if pnl is not None:
            a["scenarios"] = {s.name: float(pnl[i, j]) for j, s in enumerate(scenarios)}
        accounts.append(a)
    doc = {"as_of": market.as_of.isoformat(), "market": market.source, "methods": methods,
           "horizon_days": config.get("horizon_days", 1), "accounts": accounts}
    if scenarios:
        doc["scenarios"] = [{"name": s.name, "days": s.days,
                             "moves": {u: {"price": s.price_move[j], "vol": s.vol_shift[j]}
                                       for j, u in enumerate(UNDERLYINGS)}} for s in scenarios]
    if args.risk_parameter_file:
        contracts = risk_parameter_file(market, config, args.risk_parameter_file, dtype)
        doc["risk_parameter_file"] = {"path": args.risk_parameter_file, "contracts": len(contracts)}

    header = ["account", "ccy", "positions"] + [h for out in outputs.values() for h in out.header]
    rows = [[p.account, p.margin_currency, len(p.positions)] + [c for out in outputs.values() for c in out.rows[i]]
            for i, p in enumerate(portfolios)]
    text = [table(rows, header, title=f"{len(portfolios)} accounts on market {market.source} as of "
                  f"{market.as_of:%Y-%m-%d %H:%M:%S} UTC, {', '.join(methods)} in {elapsed:.2f} s "
                  "(figures in each account's currency)")]
    if scenarios:
        # the worst scenario is the one losing most; an account that loses in none has none
        srows = [[p.account, p.margin_currency] + [float(x) for x in pnl[i]]
                 + [scenarios[int(pnl[i].argmin())].name if pnl[i].min() < 0 else "none (no loss)"]
                 for i, p in enumerate(portfolios)]
        text.append(table(srows, ["account", "ccy"] + [s.name for s in scenarios] + ["worst"],
                          title="P&L under each scenario (gain positive; every underlying moves at once)"))
    if args.risk_parameter_file:
        text.append(f"risk parameter file: {len(contracts)} contracts written to {args.risk_parameter_file}")
    return doc, "\n\n".join(text)

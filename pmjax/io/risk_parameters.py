"""Supplied SPAN risk parameter files (SPEC section 6) and the contract positions margined on them.

A file (YAML or JSON) carries ``currency``, ``commodities`` (per SPAN combined commodity: ``intra_spread_charge``
per spread, ``spot_charge`` per spot-month delta, ``short_option_minimum`` per short option, ``som_method``
max | gross), ``contracts`` (per contract: ``id``, ``commodity``, ``type`` call | put | future | perpetual |
spot, ``tier`` (1-based), ``spot_month``, ``delta``, optional ``price``, and ``risk_array``: 16 losses of ONE long
contract, extremes already weighted) and ``inter_spreads`` (``legs: {A: delta per spread, B: ...}``,
``credit_rate``). Every error names the file, the row (``contracts[3] (TF-N10-700-C)``) and the column.
Portfolios margined on a file name contracts: ``{contract: ID, quantity: N}`` (contracts, not coins; an
``instrument:`` key naming a contract id does too).
"""

from __future__ import annotations

import dataclasses
import os

from pmjax.core.errors import InputError
from pmjax.core.validate import number
from pmjax.io.documents import read_document

#: scenarios per risk array
N_SCENARIOS = 16
CONTRACT_TYPES = ("call", "put", "future", "perpetual", "spot")
SOM_METHODS = ("max", "gross")
COMMODITY_KEYS = ("intra_spread_charge", "spot_charge", "short_option_minimum")


@dataclasses.dataclass(frozen=True)
class Contract:
    """One contract of a risk parameter file (money in the file's currency, per ONE contract)."""

    id: str
    commodity: str
    type: str
    tier: int  # 1-based
    spot_month: bool
    delta: float  # composite delta
    price: float | None  # for NOV (options)
    risk_array: tuple[float, ...]  # 16 losses of one long contract, weighted

    @property
    def is_option(self) -> bool:
        return self.type in ("call", "put")


@dataclasses.dataclass
class RiskParameters:
    """A loaded file: ``commodities`` (name -> {intra_spread_charge, spot_charge, short_option_minimum,
    som_method}, in file order), ``contracts`` (id -> Contract), ``inter_spreads`` ([(leg names, ratios),
    credit_rate] in priority order), ``currency``, ``source`` and any ``notes`` the file carries."""

    currency: str
    commodities: dict[str, dict]
    contracts: dict[str, Contract]
    inter_spreads: list[tuple[tuple[str, str], tuple[float, float], float]]
    source: str
    notes: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ContractPortfolio:
    """An account's positions in contracts of a risk parameter file."""

    account: str
    positions: list[tuple[str, float]]  # (contract id, quantity in contracts)
    source: str | None = None


def _number(d, key, where, source, **bounds) -> float:
    if key not in d:
        raise InputError(f"missing {key}", source=source, field=f"{where}.{key}")
    return number(d[key], source=source, field=f"{where}.{key}", strings=False, **bounds)


def _commodities(doc, source) -> dict[str, dict]:
    comm = doc.get("commodities")
    if not isinstance(comm, dict) or not comm:
        raise InputError("missing commodities (a mapping of commodity name to its charges)", source=source,
                         field="commodities")
    out = {}
    for name, d in comm.items():
        where = f"commodities.{name}"
        if not isinstance(d, dict):
            raise InputError("must be a mapping of charges", source=source, field=where)
        row = {k: _number(d, k, where, source, low=0.0) if k in d else 0.0 for k in COMMODITY_KEYS}
        method = str(d.get("som_method", "max")).lower()
        if method not in SOM_METHODS:
            raise InputError(f"som_method must be max or gross, got {d.get('som_method')!r}", source=source,
                             field=f"{where}.som_method")
        unknown = sorted(set(d) - set(COMMODITY_KEYS) - {"som_method"})
        if unknown:
            raise InputError(f"unknown key {unknown[0]!r} (known: {', '.join(COMMODITY_KEYS)}, som_method)",
                             source=source, field=f"{where}.{unknown[0]}")
        out[str(name)] = {**row, "som_method": method}
    return out


def _contract(d, i: int, commodities, source) -> Contract:
    if not isinstance(d, dict):
        raise InputError("must be a mapping", source=source, field=f"contracts[{i}]")
    cid = d.get("id")
    if not isinstance(cid, str) or not cid.strip():
        raise InputError("missing id (a non-empty contract name)", source=source, field=f"contracts[{i}].id")
    row = f"contracts[{i}] ({cid})"
    commodity = str(d.get("commodity", ""))
    if commodity not in commodities:
        raise InputError(f"unknown commodity {d.get('commodity')!r} (the file's commodities: "
                         f"{', '.join(commodities)})", source=source, field=f"{row}.commodity")
    kind = str(d.get("type", "")).lower()
    if kind not in CONTRACT_TYPES:
        raise InputError(f"type must be one of {', '.join(CONTRACT_TYPES)}, got {d.get('type')!r}", source=source,
                         field=f"{row}.type")
    tier = int(_number(d, "tier", row, source, low=1.0, integer=True)) if "tier" in d else 1
    spot_month = d.get("spot_month", False)
    if not isinstance(spot_month, bool):
        raise InputError(f"spot_month must be true or false, got {spot_month!r}", source=source,
                         field=f"{row}.spot_month")
    delta = _number(d, "delta", row, source)
    price = _number(d, "price", row, source) if d.get("price") is not None else None
    arr = d.get("risk_array")
    if not isinstance(arr, list):
        raise InputError(f"missing risk_array ({N_SCENARIOS} losses of one long contract)", source=source,
                         field=f"{row}.risk_array")
    if len(arr) != N_SCENARIOS:
        raise InputError(f"risk_array has {len(arr)} values, a risk array has {N_SCENARIOS}", source=source,
                         field=f"{row}.risk_array")
    values = tuple(number(v, source=source, field=f"{row}.risk_array[{j + 1}]", strings=False)
                   for j, v in enumerate(arr))
    return Contract(cid.strip(), commodity, kind, tier, spot_month, delta, price, values)


def _inter_spreads(doc, commodities, source):
    inter = doc.get("inter_spreads") or []
    if not isinstance(inter, list):
        raise InputError("must be a list", source=source, field="inter_spreads")
    out = []
    for j, s in enumerate(inter):
        where = f"inter_spreads[{j}]"
        if not isinstance(s, dict) or not isinstance(s.get("legs"), dict) or len(s["legs"]) != 2:
            raise InputError("an inter spread needs legs: {A: delta, B: delta} (two commodities) and credit_rate",
                             source=source, field=where)
        names = tuple(str(k) for k in s["legs"])
        for n in names:
            if n not in commodities:
                raise InputError(f"unknown commodity {n!r} (the file's commodities: {', '.join(commodities)})",
                                 source=source, field=f"{where}.legs")
        if names[0] == names[1]:
            raise InputError("the two legs must be different commodities", source=source, field=f"{where}.legs")
        ratios = tuple(number(s["legs"][n], source=source, field=f"{where}.legs.{n}", strings=False, low=0.0,
                              low_open=True) for n in names)
        out.append((names, ratios, _number(s, "credit_rate", where, source, low=0.0, high=1.0)))
    return out


def risk_parameters_from_dict(doc, *, source: str) -> RiskParameters:
    """A risk parameter document validated (``InputError`` naming the row and column)."""
    if not isinstance(doc, dict):
        raise InputError("a risk parameter file must be a mapping with currency, commodities, contracts",
                         source=source)
    currency = str(doc.get("currency", "USD")).upper()
    commodities = _commodities(doc, source)
    entries = doc.get("contracts")
    if not isinstance(entries, list) or not entries:
        raise InputError("missing contracts (a list)", source=source, field="contracts")
    contracts: dict[str, Contract] = {}
    for i, d in enumerate(entries):
        c = _contract(d, i, commodities, source)
        if c.id in contracts:
            raise InputError(f"contract {c.id} appears twice", source=source, field=f"contracts[{i}].id")
        contracts[c.id] = c
    notes = {k: doc[k] for k in ("as_of", "market", "exchange", "provenance") if k in doc}
    return RiskParameters(currency, commodities, contracts, _inter_spreads(doc, commodities, source), source, notes)


def load_risk_parameters(path: str) -> RiskParameters:
    """Load a risk parameter file in SPEC section 6's layout (``.yaml``/``.yml``/``.json``); CME's positional
    format is ``pmjax.io.span_pa2.load_pa2``, and ``load_risk_file`` picks by extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".yaml", ".yml", ".json"):
        raise InputError("a risk parameter file is YAML or JSON (SPEC section 6) or CME's expanded positional "
                         "format (.pa2)", source=path)
    return risk_parameters_from_dict(read_document(path), source=path)


def contract_portfolio_from_dict(doc, rp: RiskParameters, *, source: str, account: str | None = None
                                 ) -> ContractPortfolio:
    """Positions ``{contract: ID, quantity: N}`` (or ``instrument: ID``) checked against ``rp``'s contracts;
    duplicates are summed."""
    if isinstance(doc, list):
        doc = {"positions": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("positions"), list):
        raise InputError("a portfolio must be a mapping with a list of positions", source=source, field="positions")
    merged: dict[str, float] = {}
    for i, e in enumerate(doc["positions"]):
        where = f"positions[{i}]"
        if not isinstance(e, dict):
            raise InputError("must be a mapping {contract: ID, quantity: N}", source=source, field=where)
        cid = e.get("contract", e.get("instrument"))
        if not isinstance(cid, str) or cid.strip() not in rp.contracts:
            raise InputError(f"unknown contract {cid!r}: not in the risk parameter file {rp.source}", source=source,
                             field=f"{where}.contract")
        q = number(e.get("quantity"), source=source, field=f"{where}.quantity", strings=True)
        merged[cid.strip()] = merged.get(cid.strip(), 0.0) + q
    name = account or doc.get("account") or os.path.splitext(os.path.basename(source))[0]
    return ContractPortfolio(str(name), list(merged.items()), source)


def load_contract_portfolio(path: str, rp: RiskParameters) -> ContractPortfolio:
    """A portfolio file (YAML/JSON, or CSV with columns contract (or instrument) and quantity) in ``rp``'s
    contracts."""
    if path.lower().endswith(".csv"):
        from pmjax.io.portfolio import read_csv_rows

        header, rows = read_csv_rows(path)
        key = "contract" if "contract" in header else "instrument"
        if key not in header or "quantity" not in header:
            raise InputError("a CSV portfolio on a risk parameter file needs the columns contract,quantity",
                             source=path, field="header")
        return contract_portfolio_from_dict({"positions": [{"contract": r.get(key), "quantity": r.get("quantity")}
                                                           for r in rows]}, rp, source=path)
    return contract_portfolio_from_dict(read_document(path), rp, source=path)

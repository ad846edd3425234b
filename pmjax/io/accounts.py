"""Many accounts from a directory of portfolio files, a multi-account file or one portfolio file."""

from __future__ import annotations

import os

from pmjax.core.errors import InputError
from pmjax.core.portfolio import Portfolio
from pmjax.io.documents import read_document
from pmjax.io.portfolio import load_portfolio, portfolio_from_dict


PORTFOLIO_EXTENSIONS = (".yaml", ".yml", ".json", ".csv")


def load_accounts(path: str) -> list[Portfolio]:
    """Accounts from a directory of portfolio files (each file one account, in name order), a multi-account
    YAML/JSON file (``accounts: [{account, margin_currency, positions}, ...]``) or a single portfolio file."""
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if os.path.splitext(f)[1].lower() in PORTFOLIO_EXTENSIONS)
        if not files:
            raise InputError(f"no portfolio files ({', '.join(PORTFOLIO_EXTENSIONS)}) in directory", source=path)
        return [load_portfolio(os.path.join(path, f)) for f in files]
    if not os.path.exists(path):
        raise InputError("no such file or directory", source=path)
    if path.lower().endswith(".csv"):
        return [load_portfolio(path)]
    doc = read_document(path)
    if isinstance(doc, dict) and "accounts" in doc:
        entries = doc["accounts"]
        if not isinstance(entries, list) or not entries:
            raise InputError("accounts must be a non-empty list", source=path, field="accounts")
        out = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise InputError("each account must be a mapping with positions", source=path, field=f"accounts[{i}]")
            entry = dict(entry)
            entry.setdefault("account", f"account-{i + 1}")
            out.append(portfolio_from_dict(entry, source=f"{path} accounts[{i}]"))
        return out
    return [portfolio_from_dict(doc, source=path)]


# ---------------------------------------------------------------- batching

"""Many accounts from a directory of portfolio files, a multi-account file or one portfolio file."""

from __future__ import annotations

import os

from pmjax.core.errors import InputError
from pmjax.io.documents import read_document
from pmjax.io.portfolio import load_portfolio, portfolio_from_dict


PORTFOLIO_EXTENSIONS = (".yaml", ".yml", ".json", ".csv")


def load_accounts(path: str, *, load_file=load_portfolio, from_dict=None) -> list:
    """Accounts from a directory of portfolio files (each file one account, in name order), a multi-account
    YAML/JSON file (``accounts: [{account, margin_currency, positions}, ...]``) or a single portfolio file.
    ``load_file(path)`` reads one file and ``from_dict(doc, source)`` one document (default: portfolios;
    ``pmjax.apps.supplied`` passes its contract-portfolio readers)."""
    from_dict = (lambda doc, source: portfolio_from_dict(doc, source=source)) if from_dict is None else from_dict
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if os.path.splitext(f)[1].lower() in PORTFOLIO_EXTENSIONS)
        if not files:
            raise InputError(f"no portfolio files ({', '.join(PORTFOLIO_EXTENSIONS)}) in directory", source=path)
        return [load_file(os.path.join(path, f)) for f in files]
    if not os.path.exists(path):
        raise InputError("no such file or directory", source=path)
    if path.lower().endswith(".csv"):
        return [load_file(path)]
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
            out.append(from_dict(entry, f"{path} accounts[{i}]"))
        return out
    return [from_dict(doc, path)]


# ---------------------------------------------------------------- batching

"""Configuration: the defaults in ``configs/*.yaml`` with a user's ``--config`` file merged over them."""

from __future__ import annotations

import copy
import pathlib

import yaml

from .errors import InputError

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in, recursively for mappings; neither input is changed."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def default_config() -> dict:
    """Every ``configs/*.yaml`` merged, in name order (each file holds its own top-level keys)."""
    cfg: dict = {}
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        with open(path, encoding="utf-8") as fh:
            cfg = deep_merge(cfg, yaml.safe_load(fh) or {})
    return cfg


def load_config(path: str | None = None) -> dict:
    """Defaults, with the YAML/JSON file at ``path`` (if any) merged over them."""
    cfg = default_config()
    if path:
        from .portfolio import read_document

        user = read_document(path)
        if user is None:
            user = {}
        if not isinstance(user, dict):
            raise InputError("a config must be a mapping", source=path)
        cfg = deep_merge(cfg, user)
        cfg["_source"] = path
    return cfg

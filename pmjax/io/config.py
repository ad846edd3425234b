"""Configuration: the packaged defaults (``pmjax/configs/*.yaml``, read with ``importlib.resources``; the
top-level ``configs/`` is the user-editable copy, kept identical by a test) with a user's ``--config``
file merged over them."""

from __future__ import annotations

import copy
from importlib import resources

import yaml

from pmjax.core.errors import InputError

#: the packaged defaults (a ``Traversable``: a directory in a source tree or an installed wheel)
CONFIG_DIR = resources.files("pmjax") / "configs"


#: top-level keys a config may carry besides the settings: ``calibration``, the provenance that
#: ``pmjax calibrate --out`` writes. Any other key the defaults lack is an error (a section whose default
#: is {} takes any key).
PROVENANCE_KEYS = ("calibration",)


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in, recursively for mappings; neither input is changed."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def default_config() -> dict:
    """Every ``configs/*.yaml`` merged, in name order (each file holds its own top-level keys)."""
    cfg: dict = {}
    files = sorted((f for f in CONFIG_DIR.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    for f in files:
        cfg = deep_merge(cfg, yaml.safe_load(f.read_text(encoding="utf-8")) or {})
    return cfg


def check_sections(user: dict, defaults: dict, *, source: str, prefix: str = "") -> dict:
    """``user`` with every key whose default is a mapping (a section: ``var``, ``span``,
    ``span.underlyings.BTC``, ...) checked to be a mapping too, recursively; an empty section (null) is
    taken as {} (the defaults). A key that the defaults do not have (a misspelling) is an error too.
    Raises ``InputError`` naming the config file, the key and the keys expected there."""
    out = {}
    for k, v in user.items():
        name = f"{prefix}{k}"
        known = k in defaults or (not prefix and k in PROVENANCE_KEYS) if isinstance(defaults, dict) else True
        if defaults and not known:
            where = f"section {prefix[:-1]}" if prefix else "a config"
            raise InputError(f"unknown key {k!r} ({where} has {', '.join(map(str, defaults))})",
                             source=source, field=name)
        default = defaults.get(k) if isinstance(defaults, dict) else None
        if isinstance(default, dict):
            if v is None:
                v = {}
            if not isinstance(v, dict):
                raise InputError(f"must be a mapping (a section of settings), got {type(v).__name__} {v!r:.60}",
                                 source=source, field=name)
            v = check_sections(v, default, source=source, prefix=f"{name}.")
        out[k] = v
    return out


def load_config(path: str | None = None) -> dict:
    """Defaults, with the YAML/JSON file at ``path`` (if any) merged over them."""
    cfg = default_config()
    if path:
        from pmjax.io.documents import read_document

        user = read_document(path)
        if user is None:
            user = {}
        if not isinstance(user, dict):
            raise InputError("a config must be a mapping", source=path)
        user = check_sections(user, cfg, source=path)
        cfg = deep_merge(cfg, user)
        cfg["_source"] = path
    return cfg

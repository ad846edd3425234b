"""Documents in and out: YAML/JSON files read with one-line errors, and results made JSON-safe."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import yaml

from pmjax.core.errors import InputError


def read_document(path: str):
    """Read a YAML or JSON file into Python objects, with one-line errors."""
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror}", source=path) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start}: {e.reason})", source=path) from None
    try:
        if ext == ".json":
            return json.loads(text)
        if ext in (".yaml", ".yml"):
            return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        msg = str(e).splitlines()[0]
        raise InputError(f"not valid {ext[1:].upper()}: {msg}", source=path) from None
    raise InputError(f"unknown file type {ext!r} (use .yaml, .yml, .json or .csv)", source=path)


def to_jsonable(x):
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x

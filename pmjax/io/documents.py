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
            return yaml.load(text, Loader=_FAST_LOADER)  # noqa: S506  (a safe loader: SafeConstructor)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}", source=path) from None
    except yaml.YAMLError:
        try:  # the pure-Python parser's messages name the character and the context: reparse for them
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InputError(f"not valid YAML{yaml_error_detail(e)}", source=path) from None
    raise InputError(f"unknown file type {ext!r} (use .yaml, .yml, .json or .csv)", source=path)


#: libyaml's safe loader when PyYAML has it (a 5,000-position book parses about 10x faster), else the Python one
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_error_detail(e: yaml.YAMLError) -> str:
    """`` at line L, column C: cause`` of a YAML error (1-based, as editors count), with a hint for tabs
    and bad indentation."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if "'\\t'" in problem:
        cause = "a tab character (YAML indents with spaces only)"
    elif problem == "mapping values are not allowed here":
        cause = "unexpected ':' (a bad indent, or a value holding ': ' that needs quotes)"
    else:
        cause = problem
        context = getattr(e, "context", None)
        if context:
            cause += f" ({context})"
    return f"{where}: {cause}"


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


def json_line(x) -> str:
    """``json.dumps(to_jsonable(x))`` (one line; non-finite numbers as null), without walking ``x`` first when it
    already holds only JSON types and finite numbers: the monitor writes thousands of records per tick."""
    try:
        return _PLAIN.encode(x)
    except (ValueError, TypeError):
        return json.dumps(to_jsonable(x))


#: json.dumps's encoder without the circular check (records are trees) and refusing NaN (``json_line`` then walks)
_PLAIN = json.JSONEncoder(allow_nan=False, check_circular=False)

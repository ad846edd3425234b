"""The command answers at once and compiles once (issue 20): parsing the command line (``--help``, every command's
``--help``, argument errors) imports neither JAX nor numpy, ``import pmjax`` stays light, and JAX's persistent
compilation cache is on for the ``pmjax`` command (the user's cache folder, ``PMJAX_JAX_CACHE=off`` or a folder,
an explicit ``JAX_COMPILATION_CACHE_DIR`` kept), so a second run of the same book loads every program it
compiled the first time. Behaviour only: no wall time is asserted here (README gives the measured times)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from pmjax.core import jax_cache

REPO = pathlib.Path(__file__).resolve().parents[1]
ENABLE = jax_cache.enable_compilation_cache  # the library door, before the fixture below replaces it
HEAVY = ("jax", "jaxlib", "numpy", "scipy", "matplotlib", "equinox", "yaml")

#: argument lists that end in help or an argument error, before any computation
LIGHT_ARGV = [["--help"], [], ["margin"], ["margin", "book.yaml", "--paths", "many"], ["no-such-command"],
              ["margin", "book.yaml", "--precision", "float16"], ["bench", "--sizes", "huge"],
              ["calibrate", "--volatility-model", "arch", "--history", "x.csv"], ["price"], ["stress"],
              ["monitor", "--liquidation-fraction", "x"], ["hedge", "--max-trades", "two", "book.yaml"]]

PARSE_ONLY = """
import contextlib, io, json, sys
from pmjax.cli.app import COMMANDS, main
codes = {}
for argv in json.loads(sys.argv[1]) + [[name, "--help"] for name in COMMANDS]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            codes[" ".join(argv)] = main(argv)
        except SystemExit as e:  # --help
            codes[" ".join(argv)] = e.code
import pmjax
pmjax.__version__, pmjax.__all__
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def _env(**changes) -> dict:
    """This environment without the test run's cache settings, plus ``changes``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PMJAX_JAX_CACHE", "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "XDG_CACHE_HOME")}
    env.update(changes)
    return env


def test_parsing_help_and_argument_errors_import_no_jax(tmp_path):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(PARSE_ONLY), json.dumps(LIGHT_ARGV), json.dumps(HEAVY)],
                       capture_output=True, text=True, cwd=REPO, env=_env(XDG_CACHE_HOME=str(tmp_path)), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["heavy"] == [], f"parsing imported {out['heavy']}"
    codes = out["codes"]
    assert codes["--help"] == 0 and codes["margin --help"] == 0 and codes["bench --help"] == 0
    assert all(code == 2 for argv, code in codes.items() if not argv.endswith("--help")), codes
    assert not (tmp_path / "pmjax").exists()  # nothing ran, so no cache folder was made


def test_the_console_entry_point_prints_help_without_importing_jax(tmp_path):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "pmjax", "--help"], capture_output=True, text=True,
                       cwd=REPO, env=_env(XDG_CACHE_HOME=str(tmp_path)), timeout=120)
    assert r.returncode == 0 and "margin" in r.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "pmjax.cli.app" in imported
    assert not {m.split(".")[0] for m in imported} & set(HEAVY)


def test_light_names_are_the_applications_names():
    from pmjax.apps import hedge, hedge_map, margin, monitor, names
    from pmjax.bench import names as bench_names, rows
    from pmjax.cli.commands import stress, stress_methods

    assert tuple(margin.METHODS) == names.MARGIN_METHODS
    assert tuple(stress_methods.METHODS) == stress.METHODS
    assert hedge.HEDGE_METHODS is names.HEDGE_METHODS and hedge_map.KINDS is names.KINDS
    assert monitor.CALL_STATUSES is names.CALL_STATUSES and rows.ROW_NAMES is bench_names.ROW_NAMES


# ---------------------------------------------------------------- the command's compilation cache


@pytest.fixture
def calls(monkeypatch):
    """What ``cli_compilation_cache`` asked of JAX (enable with its arguments, or disable), JAX left alone."""
    seen = []
    monkeypatch.setattr(jax_cache, "enable_compilation_cache", lambda path, **kw: seen.append(("on", path, kw)) or path)
    monkeypatch.setattr(jax_cache, "disable_compilation_cache", lambda: seen.append(("off",)))
    return seen


def test_default_cache_folder_is_the_users(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert jax_cache.default_cache_dir({"XDG_CACHE_HOME": "/x"}, "linux") == os.path.join("/x", "pmjax", "jax")
    assert jax_cache.default_cache_dir({}, "linux") == os.path.join(str(tmp_path), ".cache", "pmjax", "jax")
    assert jax_cache.default_cache_dir({}, "darwin") == os.path.join(str(tmp_path), "Library", "Caches", "pmjax", "jax")


def test_cli_cache_settings(tmp_path, calls):
    notes = []
    xdg = str(tmp_path / "xdg")
    assert jax_cache.cli_compilation_cache(notes.append, {"XDG_CACHE_HOME": xdg}) == os.path.join(xdg, "pmjax", "jax")
    mine = str(tmp_path / "mine")
    jax_cache.cli_compilation_cache(notes.append, {"PMJAX_JAX_CACHE": mine, "XDG_CACHE_HOME": xdg})
    theirs = str(tmp_path / "theirs")  # an explicit JAX_COMPILATION_CACHE_DIR (and JAX's thresholds) are kept
    jax_cache.cli_compilation_cache(notes.append, {"JAX_COMPILATION_CACHE_DIR": theirs, "XDG_CACHE_HOME": xdg,
                                                   "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2"})
    for off in ("off", "OFF", "0"):
        assert jax_cache.cli_compilation_cache(notes.append, {"PMJAX_JAX_CACHE": off, "XDG_CACHE_HOME": xdg}) is None
    assert calls == [("on", os.path.join(xdg, "pmjax", "jax"), {}), ("on", mine, {}),
                     ("on", theirs, {"min_compile_time_secs": 2.0})] + [("off",)] * 3
    assert notes == []


def test_unwritable_cache_folder_is_one_notice_and_the_cache_off(tmp_path, calls):
    (tmp_path / "file.txt").write_text("not a folder")
    notes = []
    bad = str(tmp_path / "file.txt" / "cache")
    assert jax_cache.cli_compilation_cache(notes.append, {"PMJAX_JAX_CACHE": bad}) is None
    assert calls == [("off",)] and len(notes) == 1 and "compilation cache off" in notes[0] and bad in notes[0]
    assert ENABLE(bad) is None  # the library door: None, JAX untouched


@pytest.mark.slow
def test_second_run_of_the_same_book_compiles_nothing(tmp_path):
    """``pmjax margin`` twice on a one-position book with an empty cache in the user's cache folder: the first
    run fills it, the second adds no entry (every program is loaded, none compiled) and prints the same figures."""
    book = tmp_path / "book.yaml"
    book.write_text("positions:\n  - {instrument: BTC-27MAR26-100000-C, quantity: -1}\n")
    env = _env(XDG_CACHE_HOME=str(tmp_path / "xdg"))
    cache = tmp_path / "xdg" / "pmjax" / "jax"
    cmd = [sys.executable, "-m", "pmjax", "margin", str(book), "--method", "span", "--json"]
    outs, entries = [], []
    for _ in range(2):
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(json.loads(r.stdout))
        entries.append(sorted(os.listdir(cache)))
    assert len(entries[0]) > 0, "the first run cached nothing"
    assert entries[1] == entries[0], f"the second run compiled {sorted(set(entries[1]) - set(entries[0]))}"
    assert outs[1] == outs[0]

"""Packaging: the defaults packaged in pmjax/configs are the top-level configs/ byte for byte, and a wheel
built offline from the tree installs into a fresh virtual environment whose ``pmjax`` command runs from
outside the tree (defaults, bundled markets and history read from the installed package)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import sysconfig

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

BOOK = """account: desk-1
margin_currency: USD
positions:
  - {instrument: BTC-27MAR26-100000-C, quantity: -2}
  - {instrument: ETH_USDC-PERPETUAL, quantity: 3}
  - {instrument: BTC, quantity: 1}
  - {underlying: ETH, type: option, expiry: 2026-03-27, strike: 3000, right: put, settlement: linear, quantity: 2}
"""


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.yaml"))}


def test_packaged_configs_are_the_top_level_configs_byte_for_byte():
    packaged, top = _files(REPO / "pmjax" / "configs"), _files(REPO / "configs")
    assert packaged and set(packaged) == set(top), sorted(set(packaged) ^ set(top))
    differ = [name for name in packaged if packaged[name] != top[name]]
    assert not differ, f"pmjax/configs and configs/ differ: {differ}"


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def _wheel(tmp: pathlib.Path, env) -> pathlib.Path:
    """A wheel of a copy of the tree (so the build writes nothing into the checkout), built offline with
    this interpreter's setuptools (no build isolation: nothing downloaded)."""
    src = tmp / "src"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src)
    shutil.copy2(REPO / "README.md", src)
    shutil.copytree(REPO / "pmjax", src / "pmjax", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", tmp / "dist"], cwd=src, env=env)
    (wheel,) = (tmp / "dist").glob("pmjax-*.whl")
    return wheel


def _venv(tmp: pathlib.Path, env) -> pathlib.Path:
    """A fresh venv whose dependencies (jax & co.) come from this interpreter's environment: with
    ``--system-site-packages`` when this interpreter is not itself in a venv, else through a .pth file
    listing this environment's site-packages (appended after the venv's own, so the wheel wins)."""
    venv = tmp / "venv"
    in_venv = sys.prefix != sys.base_prefix
    _run([sys.executable, "-m", "venv", "--without-pip"] + ([] if in_venv else ["--system-site-packages"]) + [venv],
         cwd=tmp, env=env)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    if in_venv:
        purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env)
        outer = [p for p in dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]])
                 if os.path.isdir(p)]
        pathlib.Path(purelib.stdout.strip(), "zz_outer_env.pth").write_text("\n".join(outer) + "\n")
    return python


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_tree(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(JAX_PLATFORMS="cpu", PIP_DISABLE_PIP_VERSION_CHECK="1")
    wheel = _wheel(tmp_path, env)
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True,
                           text=True).stdout
    for f in ("pmjax/configs/span.yaml", "pmjax/configs/scenarios/stress_days.yaml",
              "pmjax/data/deribit_chain_20260102T091809Z.csv", "pmjax/data/history/btc_dvol.csv"):
        assert f in names, f
    python = _venv(tmp_path, env)
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], tmp_path,
         env)
    bindir = python.parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "work"  # outside the checkout: nothing read from the tree
    work.mkdir()
    where = _run([python, "-c", "import pmjax; print(pmjax.__file__)"], work, env).stdout.strip()
    assert pathlib.Path(where).resolve().is_relative_to(tmp_path / "venv"), where
    assert not pathlib.Path(where).resolve().is_relative_to(REPO), where
    (work / "book.yaml").write_text(BOOK)
    pmjax = bindir / "pmjax"
    doc = json.loads(_run([pmjax, "margin", "book.yaml", "--method", "all", "--paths", "2000", "--json"], work,
                          env).stdout)
    assert {"account", "as_of", "currency", "positions", "rules", "span", "deribit", "var"} <= set(doc)
    assert {"initial", "maintenance", "by_position", "strategies"} <= set(doc["rules"])
    assert {"risk", "nov", "total", "by_underlying"} <= set(doc["span"])
    assert {"by_underlying", "initial", "maintenance"} <= set(doc["deribit"])
    assert {"model", "confidence", "paths", "var", "es", "contributions"} <= set(doc["var"])
    assert doc["account"] == "desk-1" and doc["var"]["paths"] == 2000 and doc["span"]["total"] > 0
    _run([pmjax, "report", "book.yaml", "--out", "out", "--paths", "2000"], work, env)
    report = json.loads((work / "out" / "report.json").read_text())
    assert report and (work / "out" / "report.html").exists() and list((work / "out").glob("*.png"))

"""Every command in README.md runs as written from a fresh clone, and the books in examples/ are tested.

Each fenced ```sh block of README.md is one test: its commands run in order (a block may use a file an
earlier command of it wrote, e.g. ``pmjax calibrate --out my_span.yaml`` then ``--config my_span.yaml``) in a
temporary directory holding copies of ``examples/`` and ``configs/``, so nothing is written into the
repository. They run in this process (``pmjax.cli.app.main`` for ``pmjax``, ``runpy`` for ``python -m``: see
``_run``) so JAX compilations are shared; one test runs the ``pmjax`` console script in a real subprocess. Heavy commands run
at the small sizes in ``SUBSTITUTIONS`` (each says why); everything else is the README's text.
"""

from __future__ import annotations

import importlib
import json
import math
import pathlib
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from pmjax.cli import app as cli

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
EXAMPLES = REPO / "examples"

#: commands not run here, with the reason: ``make test`` is this suite; ``make demo`` is ``pmjax demo --out
#: reports/demo`` after an install, the README's next block runs that command itself
SKIP = {
    "make demo": "make demo installs the venv and runs `pmjax demo --out reports/demo` (tests/test_demo.py)",
    "make test": "make test is this test suite",
    "pmjax demo --out reports/demo": "tests/test_demo.py runs this command (into a temporary folder) and checks "
                                     "its output; a second run here would only repeat it",
}

#: documented size substitutions for heavy commands: (pattern, replacement, why). Applied to the command
#: text in order; every other command runs exactly as README.md writes it.
SUBSTITUTIONS = [
    (r"--paths 1000000\b", "--paths 20000",
     "10^6 Monte Carlo paths take several seconds on 2 cores; 20,000 run the same code (exact tail) in one"),
    (r"^(pmjax bench) --quick\b", r"\1 --sizes tiny --only black76_f32",
     "--quick takes ~30 s; the tiny preset and one row run the same command path"),
    (r"^(pmjax bench) --sizes medium\b", r"\1 --sizes tiny --only black76_f32",
     "medium takes minutes on 2 cores"),
    (r"^(pmjax bench)(?!.*--sizes)(?!.*--quick)(?=.*--precision float32)", r"\1 --sizes tiny --only black76_f32",
     "the GPU's full preset on a CPU takes many minutes"),
    (r"^(python -m pmjax\.apps\.backtest .*)$", r"\1 --start 2022-11-07 --end 2022-11-12 --paths 512",
     "the full backtest (1,719 days) takes minutes; six days run every measure"),
]

#: options whose value is a file or directory a command writes (not an input that must exist)
OUTPUT_OPTIONS = ("--out", "--risk-parameter-file", "--out-book", "--store")


def sh_blocks() -> list[tuple[int, list[tuple[int, str]]]]:
    """The fenced ```sh blocks of README.md: (line of the fence, [(line, command text without comments)])."""
    blocks, current, start, pending, pending_line = [], None, 0, "", 0
    for n, line in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1):
        if current is None:
            if line.strip() == "```sh":
                current, start = [], n
            continue
        if line.strip() == "```":
            blocks.append((start, current))
            current = None
            continue
        if not pending:
            pending_line = n
        if line.rstrip().endswith("\\"):  # a continued command
            pending += line.rstrip()[:-1] + " "
            continue
        tokens = shlex.split(pending + line, comments=True)  # `# comment` tails dropped, quotes honoured
        pending = ""
        if tokens:
            current.append((pending_line, shlex.join(tokens)))
    return blocks


def substituted(command: str) -> str:
    for pattern, replacement, _why in SUBSTITUTIONS:
        command = re.sub(pattern, replacement, command)
    return command


BLOCKS = sh_blocks()
#: the blocks with something to run here (a block of skipped commands only is left out, not skipped)
RUN_BLOCKS = [(start, block) for start, block in BLOCKS if not all(c in SKIP for _, c in block)]


def test_readme_has_the_expected_blocks():
    commands = [c for _, block in BLOCKS for _, c in block]
    assert len(BLOCKS) >= 4 and any(c.startswith("pmjax margin") for c in commands)
    # every substitution still applies to a README command (a README edit must not leave one stale)
    for pattern, _, why in SUBSTITUTIONS:
        assert any(re.search(pattern, c) for c in commands), f"substitution {pattern!r} ({why}) matches no command"
    # every skipped command is still in the README (a stale entry would hide nothing, but would mislead)
    for command in SKIP:
        assert command in commands, f"SKIP names {command!r}, which no README block has"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A fresh-clone-like working directory: copies of examples/ and configs/ (commands write only here)."""
    d = tmp_path_factory.mktemp("readme")
    shutil.copytree(EXAMPLES, d / "examples")
    shutil.copytree(REPO / "configs", d / "configs")
    jax.devices()  # the backend is up: `pmjax bench` leaves the device count as it is in this process
    return d


def _run_module(module: str, args: list[str], monkeypatch) -> int:
    """``python -m module args`` in this process (runpy), its exit status."""
    monkeypatch.setattr(sys, "argv", [f"python -m {module}"] + args)
    try:
        with warnings.catch_warnings():
            # runpy warns that the module is already imported (by pmjax or another test): it runs a fresh copy
            warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def _run(argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """One command in this process: ``pmjax ...`` through the CLI's main; ``python -m pmjax ...`` by runpy
    (``pmjax/__main__.py`` calls that same main); ``python -m pmjax.apps.X ...``: runpy with ``--help`` (its
    ``__main__`` entry point parses and exits 0), then the imported module's ``main(args)``, which is what
    that entry point calls, so its jitted functions are the ones other tests compiled (a runpy copy would
    compile them again: 5 s for the backtest)."""
    capsys.readouterr()
    if argv[0] == "pmjax":
        code = cli.main(argv[1:])
    elif argv[:3] == ["python", "-m", "pmjax"]:
        code = _run_module("pmjax", argv[3:], monkeypatch)
    elif argv[:2] == ["python", "-m"]:
        module = argv[2]
        code = _run_module(module, ["--help"], monkeypatch)
        assert code == 0, f"`python -m {module} --help` exited {code}"
        capsys.readouterr()
        code = importlib.import_module(module).main(argv[3:])
    else:
        raise AssertionError(f"README command {shlex.join(argv)!r} is neither `pmjax ...` nor `python -m ...`")
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
@pytest.mark.parametrize("start,block", RUN_BLOCKS, ids=[f"README.md:{s}" for s, _ in RUN_BLOCKS])
def test_readme_block_runs(start, block, workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    timings = []
    for line, command in block:
        if command in SKIP:
            continue
        run = substituted(command)
        argv = shlex.split(run)
        t0 = time.perf_counter()
        code, out, err = _run(argv, capsys, monkeypatch)
        timings.append(f"README.md:{line} {time.perf_counter() - t0:6.1f} s  {run}")
        where = f"README.md line {line}: `{command}`" + (f" (run as `{run}`)" if run != command else "")
        assert code == 0, f"{where} exited {code}\nstderr:\n{err[-3000:]}\nstdout:\n{out[-2000:]}"
        if "--json" in argv:
            try:
                json.loads(out)
            except ValueError as e:
                raise AssertionError(f"{where}: --json output is not one JSON document ({e}):\n{out[:2000]}") from None
        else:
            assert out.strip(), f"{where} printed nothing"
    print("\n".join(timings))  # per-command times: shown with -rP (pytest -rP tests/test_readme.py)


def test_readme_commands_reference_only_existing_files():
    """Every path-looking argument of a README command exists in the repository, or is an output the
    command (or an earlier one of its block) writes."""
    missing = []
    for _, block in BLOCKS:
        written: set[str] = set()
        for line, command in block:
            argv = shlex.split(command)
            for i, a in enumerate(argv):
                if i and argv[i - 1] in OUTPUT_OPTIONS:
                    written.add(a.rstrip("/"))
                    continue
                if a.startswith("-") or ":" in a or "=" in a:
                    continue
                looks_like_path = "/" in a or re.search(r"\.(ya?ml|csv|json)$", a)
                if looks_like_path and a.rstrip("/") not in written and not (REPO / a).exists():
                    missing.append(f"README.md:{line}: {a} (in `{command}`)")
    assert not missing, "README commands name files the repository lacks:\n" + "\n".join(missing)


def test_readme_portfolio_format_is_examples_book():
    """The README's portfolio format block is ``examples/book.yaml`` (same document, comments aside)."""
    text = README.read_text(encoding="utf-8")
    m = re.search(r"```yaml\n# portfolio\.yaml \(examples/book\.yaml\)\n(.*?)```", text, re.S)
    assert m, "README's portfolio block should be headed `# portfolio.yaml (examples/book.yaml)`"
    assert yaml.safe_load(m.group(1)) == yaml.safe_load((EXAMPLES / "book.yaml").read_text(encoding="utf-8"))


def test_console_script_runs_the_first_readme_command(workdir):
    """One README command through the installed ``pmjax`` entry point, in a real subprocess."""
    first = next((ln, c) for _, b in BLOCKS for ln, c in b if c.startswith("pmjax price"))
    script = pathlib.Path(sys.executable).parent / "pmjax"
    assert script.exists(), f"no pmjax console script beside {sys.executable}"
    argv = shlex.split(first[1])
    proc = subprocess.run([str(script)] + argv[1:], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"README.md:{first[0]} `{first[1]}` exited {proc.returncode}:\n{proc.stderr}"
    for name in argv[1:]:
        if not name.startswith("-"):
            assert name in proc.stdout


# ---------------------------------------------------------------- the realistic books

@pytest.fixture(scope="module")
def bundled():
    import pmjax

    return pmjax.load_market("deribit-20260102"), pmjax.load_config()


def _doc(portfolio, bundled, methods):
    import pmjax

    market, config = bundled
    return pmjax.margin_document(portfolio, market, config, methods, dtype=jnp.float64)


def test_covered_calls_btc(bundled):
    """BTC-margined covered calls: the coins held cover the calls (rules ask nothing beyond what the same
    calls ask uncovered), the premium is in BTC, and the account qualifies for portfolio margin."""
    import dataclasses

    from pmjax.io.portfolio import load_portfolio

    book = load_portfolio(str(EXAMPLES / "covered_calls_btc.yaml"))
    assert book.margin_currency == "BTC" and book.collateral == {"BTC": 10.0}
    covered = _doc(book, bundled, ["rules", "span"])
    naked = _doc(dataclasses.replace(book, collateral={}), bundled, ["rules"])
    assert covered["rules"]["initial"] <= naked["rules"]["initial"]
    assert naked["rules"]["initial"] > 0.1  # 10 naked calls: at least 10% of 10 coins, in BTC
    assert [s["type"] for s in covered["rules"]["strategies"]] == ["covered_call"]
    # premium in BTC: 10 calls at the chain's coin price (about 0.0104 BTC each)
    value = sum(p["value"] for p in covered["positions"])
    assert -0.2 < value < -0.05
    assert covered["qualification"]["qualifies"]  # 10 BTC of equity, above the 100,000 USD minimum


def test_short_strangle_is_delta_hedged_by_the_perpetual(bundled):
    """The perpetual's 0.46 BTC makes the strangle's net delta (coins) about zero; without it, -0.46."""
    from pmjax.io.portfolio import load_portfolio

    book = load_portfolio(str(EXAMPLES / "short_strangle_perp_hedge.yaml"))
    doc = _doc(book, bundled, ["rules"])
    deltas = {p["instrument"]: p["delta"] for p in doc["positions"]}
    options = sum(d for name, d in deltas.items() if name != "BTC-PERPETUAL")
    assert deltas["BTC-PERPETUAL"] == pytest.approx(0.46)
    assert options == pytest.approx(-0.46, abs=0.01)   # the strangle alone is short ~0.46 BTC
    assert abs(options + deltas["BTC-PERPETUAL"]) < 0.01  # hedged: flat to 0.01 BTC of ~5 BTC a leg
    assert doc["positions"][0]["value"] < 0 and doc["positions"][1]["value"] < 0  # both legs short premium


def test_eth_usdc_put_calendar_prices_in_usdc(bundled):
    """USDC-settled legs: value = quantity x Black-76 on the forward in USD (no coin conversion, by hand
    here); the rules see a calendar and ask its debit, the net premium paid."""
    from pmjax.io.portfolio import load_portfolio

    market, _ = bundled
    book = load_portfolio(str(EXAMPLES / "eth_usdc_put_calendar.yaml"))
    assert all(p.instrument.settlement == "linear" for p in book.positions)
    doc = _doc(book, bundled, ["rules", "span"])
    assert doc["currency"] == "USD"
    price = {}
    for p, row in zip(book.positions, doc["positions"]):
        inst = p.instrument
        F, T = market.forward("ETH", inst.expiry), market.years_to(inst.expiry)
        vol = market.vol("ETH", inst.expiry, inst.strike)
        d1 = (math.log(F / inst.strike) + vol * vol * T / 2) / (vol * math.sqrt(T))
        d2 = d1 - vol * math.sqrt(T)
        N = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))  # noqa: E731
        put = inst.strike * N(-d2) - F * N(-d1)
        assert row["value"] == pytest.approx(p.quantity * put, rel=1e-9), row["instrument"]
        price[inst.expiry] = put
    near, far = sorted(price)
    debit = 50 * (price[far] - price[near])
    assert 6000 < debit < 8000
    assert [s["type"] for s in doc["rules"]["strategies"]] == ["calendar"]
    assert doc["rules"]["initial"] == pytest.approx(debit, rel=1e-9)
    assert doc["span"]["nov"] == pytest.approx(debit, rel=1e-9)


def test_stress_folder_accounts(bundled):
    """The multi-account folder: five accounts, USD- and ETH-margined; under the stress days the put
    writer loses the most, the long straddle gains, the cash-and-carry is flat."""
    from pmjax.apps.stress import stress_pnl
    from pmjax.batch.accounts import build_batch
    from pmjax.io.accounts import load_accounts
    from pmjax.scenarios.named import load_scenarios

    market, _ = bundled
    accounts = load_accounts(str(EXAMPLES / "accounts"))
    names = [a.account for a in accounts]
    assert len(accounts) == 5 and {a.margin_currency for a in accounts} == {"USD", "ETH"}
    scenarios = load_scenarios(str(REPO / "configs" / "scenarios" / "stress_days.yaml"))
    pnl = np.asarray(stress_pnl(build_batch(accounts, market, dtype=jnp.float64), scenarios))
    row = dict(zip(names, pnl))
    assert np.all(row["eth-long-straddle"] > 0)
    assert np.all(np.abs(row["btc-basis-trade"]) < 1e-6 * 5 * market.spot("BTC"))
    usd = [n for n, a in zip(names, accounts) if a.margin_currency == "USD"]
    assert all(min(row[n]) >= min(row["btc-put-writer"]) for n in usd)
    assert len(load_accounts(str(EXAMPLES / "accounts.yaml"))) == 3

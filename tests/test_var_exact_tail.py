"""``var.revaluation: exact_tail`` (pmjax.scenarios.tail_screen): every path screened on per-underlying factor
grids, the tail revalued in full; VaR, ES, their standard errors, the tail paths and the ES contributions equal
full revaluation's exactly (==) on random books, for every model, precision and margin currency; a band that is
too narrow is detected and recovered."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import pmjax
from pmjax.core.errors import InputError
from pmjax.core.instruments import Instrument
from pmjax.core.portfolio import Position, make_portfolio
from pmjax.measures import var
from pmjax.scenarios import montecarlo as mc
from pmjax.scenarios import tail_screen


@pytest.fixture(scope="module")
def market():
    return pmjax.load_market("deribit-20260102")


def random_book(market, seed: int, n: int = 40):
    """Listed BTC and ETH options near and far from expiry (the nearest expires within the one-day horizon),
    the same strikes as linear (USDC) options, futures, perpetuals (inverse and linear) and spot, long and
    short."""
    rng = np.random.default_rng(seed)
    positions = []
    for u in ("BTC", "ETH"):
        listed = market.listed_strikes(u, max_log_moneyness=0.4)
        expiries = sorted({e for e, _ in listed})
        picks = [listed[i] for i in rng.choice(len(listed), n // 2, replace=False)]
        nearest = [(e, k) for e, k in listed if e == expiries[0]]  # expires inside the horizon
        picks += [nearest[i] for i in rng.choice(len(nearest), 2, replace=False)]
        for j, (expiry, strike) in enumerate(picks):
            settlement = "linear" if j % 5 == 4 else "inverse"
            right = "call" if rng.random() < 0.5 else "put"
            positions.append(Position(Instrument(u, "option", settlement, expiry, strike, right),
                                      float(np.round(rng.normal(0, 3), 2) or 1.0)))
        positions += [Position(Instrument(u, "future", "inverse", expiries[-1]), float(rng.normal(0, 2))),
                      Position(Instrument(u, "perpetual", "inverse"), float(rng.normal(0, 2))),
                      Position(Instrument(u, "perpetual", "linear"), float(rng.normal(0, 2))),
                      Position(Instrument(u, "spot", "linear"), float(abs(rng.normal(0, 1))))]
    return positions


def settings(**section):
    return mc.var_settings({"var": {"historical": False, "paths": 12_000, "seed": 11, "chunk": 4096, **section}})


def run(market, positions, margin, dtype, s):
    book = pmjax.book_from_portfolio(make_portfolio(positions, margin_currency=margin), market, dtype=dtype)[0]
    params = var.VarParams(*mc.build_model(market, s, dtype=dtype), s)
    return var.var_margin(book, params)


def assert_same_figures(a: var.VarResult, b: var.VarResult):
    for field in ("var", "es", "var_stderr", "es_stderr", "k", "n"):
        assert getattr(a.estimate, field) == getattr(b.estimate, field), field
    np.testing.assert_array_equal(a.estimate.tail, b.estimate.tail)
    np.testing.assert_array_equal(a.contributions, b.contributions)
    tail = a.estimate.tail
    np.testing.assert_array_equal(a.losses[tail], b.losses[tail])


@pytest.mark.parametrize("model,margin,dtype,seed", [
    ("student_t", "USD", jnp.float64, 1),
    ("normal", "BTC", jnp.float32, 2),
    ("fhs", "ETH", jnp.float64, 3),
    ("student_t", "BTC", jnp.float32, 4),
], ids=["student_t-usd-f64", "normal-btc-f32", "fhs-eth-f64", "student_t-btc-f32"])
def test_exact_tail_equals_full_revaluation(market, model, margin, dtype, seed):
    positions = random_book(market, seed)
    full = run(market, positions, margin, dtype, settings(model=model, revaluation="full"))
    exact = run(market, positions, margin, dtype, settings(model=model))
    assert_same_figures(exact, full)
    r = exact.revaluation
    assert r["mode"] == "exact_tail" and not r["fallback"]
    assert r["exact_rows"] >= 4  # the options expiring inside the horizon are valued per path
    assert r["paths_revalued"] < 0.25 * r["paths"]  # 512 checked + the candidates, of 12,000
    assert full.revaluation == {"mode": "full", "paths": 12_000, "paths_revalued": 12_000}


def test_chunk_size_leaves_the_figures_unchanged(market):
    """The first case's book and paths with another chunk (every shape of the run changes): the same figures."""
    positions = random_book(market, 1)
    full = run(market, positions, "USD", jnp.float64, settings(model="student_t", revaluation="full"))
    exact = run(market, positions, "USD", jnp.float64, settings(model="student_t", chunk=1024))
    assert_same_figures(exact, full)


def test_a_too_narrow_band_is_detected_and_recovered(market, monkeypatch):
    """A band far narrower than the screen's error fails the check on the revalued paths: it is widened
    (attempts > 1) or the run falls back to full revaluation; the figures are full revaluation's either way."""
    s = settings(model="student_t")
    book = pmjax.book_from_portfolio(make_portfolio(random_book(market, 8)), market)[0]
    model, scen, _ = mc.build_model(market, s)
    full = mc.simulate_losses(book, model, scen, paths=s.paths, seed=s.seed, chunk=4096)
    top = var.tail_rank(s.paths, s.confidence)
    expected = var.var_es(full, s.confidence)

    losses, report = tail_screen.exact_tail_losses(book, model, scen, seed=s.seed, paths=s.paths, top=top,
                                                   chunk=4096, safety=1e-4)
    assert report.attempts > 1 or report.fallback
    got = var.var_es(losses, s.confidence)
    assert (got.var, got.es, got.var_stderr, got.es_stderr) == (expected.var, expected.es, expected.var_stderr,
                                                                 expected.es_stderr)
    np.testing.assert_array_equal(got.tail, expected.tail)

    monkeypatch.setattr(tail_screen, "ATTEMPTS", 1)  # no second attempt: full revaluation, and it says so
    losses, report = tail_screen.exact_tail_losses(book, model, scen, seed=s.seed, paths=s.paths, top=top,
                                                   chunk=4096, safety=0.0)
    assert report.fallback and report.paths_revalued >= s.paths
    np.testing.assert_array_equal(losses, full)


def test_screen_bounds_hold_on_every_path(market):
    """The screened loss is within its bound of the exact loss on every path (not only the checked ones)."""
    s = settings(model="student_t", paths=8192)
    book = pmjax.book_from_portfolio(make_portfolio(random_book(market, 9), margin_currency="BTC"), market)[0]
    model, scen, _ = mc.build_model(market, s)
    full = mc.simulate_losses(book, model, scen, paths=s.paths, seed=s.seed, chunk=4096)
    loss, gap, floor, _ = tail_screen.screened_losses(book, model, scen, seed=s.seed, paths=s.paths, chunk=4096)
    bound = tail_screen.SAFETY * gap + floor
    assert np.all(np.abs(loss - full) <= bound)
    assert np.median(bound) < 1e-3 * np.std(full)  # tight: the screen ranks the paths almost exactly


def test_revaluation_setting_is_validated_and_reported(market):
    with pytest.raises(InputError) as e:
        mc.var_settings({"var": {"revaluation": "approximate"}})
    assert e.value.field == "var.revaluation"
    assert mc.var_settings({}).revaluation == "exact_tail"
    assert dataclasses.replace(mc.var_settings({}), revaluation="full").revaluation == "full"
    positions = random_book(market, 1)  # the book and settings of the first equality case: compiled already
    result = run(market, positions, "USD", jnp.float64, settings(model="student_t"))
    doc = var.var_section(result, n_positions=len(positions), currency="USD")
    assert doc["revaluation"]["mode"] == "exact_tail" and doc["revaluation"]["paths"] == 12_000
    assert 0 < doc["revaluation"]["paths_revalued"] < 12_000 and doc["revaluation"]["attempts"] == 1


def test_many_accounts_on_shared_paths_equal_one_at_a_time(market, tmp_path, capsys):
    """``pmjax stress ACCOUNTS --method var`` (``var_margin_accounts``: the paths drawn once, each account screened
    on its own grids) gives each account's SPEC ``var`` section, equal to ``var_margin`` of that account alone
    (the same padded size) exactly, in USD and in a coin."""
    import json

    from pmjax.batch.accounts import build_batch
    from pmjax.cli.app import main
    from pmjax.io.accounts import load_accounts

    for name, text in {"a.yaml": "positions:\n  - {instrument: BTC-27MAR26-100000-C, quantity: -2}\n"
                                 "  - {instrument: ETH-PERPETUAL, quantity: 3}\n",
                       "b.yaml": "margin_currency: BTC\npositions:\n  - {instrument: BTC-PERPETUAL, quantity: 1}\n"
                                 "  - {instrument: BTC-27MAR26-80000-P, quantity: 1}\n"}.items():
        (tmp_path / name).write_text(text)
    assert main(["--json", "stress", str(tmp_path), "--method", "var", "--paths", "4000", "--seed", "5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["methods"] == ["var"]
    s = mc.var_settings({"var": {"historical": False, "paths": 4000, "seed": 5}})
    params = var.VarParams(*mc.build_model(market, s), s)
    portfolios = load_accounts(str(tmp_path))
    batch = build_batch(portfolios, market)
    for a, p in zip(doc["accounts"], portfolios):
        v = a["var"]
        assert v["paths"] == 4000 and v["seed"] == 5 and v["es"] >= v["var"] > 0
        assert sum(v["contributions"]) == pytest.approx(v["es"], rel=1e-9)
        assert v["revaluation"]["mode"] == "exact_tail"
        alone = var.var_margin(pmjax.book_from_portfolio(p, market, size=batch.size)[0], params)
        assert (v["var"], v["es"], v["var_stderr"], v["es_stderr"]) == (
            alone.estimate.var, alone.estimate.es, alone.estimate.var_stderr, alone.estimate.es_stderr)
        assert v["contributions"] == [float(c) for c in alone.contributions[: len(p.positions)]]

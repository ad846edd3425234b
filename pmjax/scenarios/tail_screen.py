"""Monte Carlo losses exact where VaR and ES look: screen every path on per-underlying factor grids, then
revalue in full only the paths that can be in the tail (``var.revaluation: exact_tail``).

Every path moves underlying u by two numbers only, the log-return r_u and the log ATM-vol change x_u
(``mc_models.factor_moves``), so the USD value of u's positions is a smooth function G_u(r, x). The screen:

1. draws every path's (r, x) (the same draws as full revaluation: path i from (seed, i) alone) and values
   exactly, per path, the options that expire within the horizon (their intrinsic value: a function of r
   with a kink at the strike);
2. tabulates G_u of the other positions on a tensor grid of ``NODES`` points spanning the drawn range of
   (asinh(r_u / width), x_u) and interpolates each path with 4 x 4-point Lagrange cubics; ``cell_bounds``
   compares that interpolation with the one on every other node at the grid's nodes and mid-points, and a
   path's bound is ``safety`` x the sum over u of its cell's largest difference (around the cell), plus a
   rounding floor;
3. with the top ``top`` losses wanted (VaR's k plus the order statistics its standard error reads), takes
   T = the top-th largest lower bound (screened - bound): at least ``top`` paths lose at least T, so a path
   whose upper bound is below T is not among them. Every other path (the candidates) is revalued in full
   with the regular kernel (``mc_models.path_losses``), bitwise what full revaluation gives that path;
4. checks the band: every candidate's exact loss, and a sample of up to ``SAMPLE_CHECK`` other paths',
   must lie inside its bounds. If one does not, the bounds are widened ``WIDEN`` times and the candidates
   taken again, up to ``ATTEMPTS`` times; then the run falls back to full revaluation and says so.

The returned loss vector holds the exact loss of every candidate and the screened loss of every other path.
When the band holds, the ``top`` largest entries, their order (ties by path index) and so VaR, ES, their
standard errors and the tail paths are exactly those of full revaluation. Formulas: docs/methodology.md
section 7.9.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from pmjax.core.book import OPTION, PAD_ROW, Book, bucket_size, pad_book
from pmjax.core.instruments import UNDERLYINGS
from pmjax.core.kernel import unit_value_usd
from pmjax.scenarios.mc_models import ScenarioModel, ScenarioParams, factor_moves, path_losses
from pmjax.scenarios.montecarlo import map_paths, simulate_losses

#: fine grid nodes per underlying in (return, vol); the coarse grid is every other node (odd counts)
NODES = (129, 17)
#: the error bound is this many times the path's cell bound (``cell_bounds``: the largest |fine - coarse|
#: around the cell). Where the value is smooth the fine cubic's error is ~1/16 of the coarse one's; on the
#: bench's 1,000-option book the largest error was 0.093 times the cell bound (so 2.7 times inside 0.25).
#: The band check catches a book where it is not enough, and widens it.
SAFETY = 0.25
#: options expiring within the horizon are worth their intrinsic value at its end, a function of the return
#: alone with a kink at the strike: valued per path (cheap), not on the grid
#: paths outside the candidates revalued in full to check the band
SAMPLE_CHECK = 512
#: a failed band check widens the bounds this many times, at most ATTEMPTS - 1 times
WIDEN = 16.0
ATTEMPTS = 3


@dataclasses.dataclass(frozen=True)
class ScreenReport:
    """What the screen did: ``paths_revalued`` in full (candidates and check sample, all attempts),
    ``candidates`` of the last attempt, ``attempts``, ``fallback`` (True: full revaluation ran),
    ``max_bound`` (the widest error bound, margin currency) and ``grid_nodes``."""

    mode: str
    paths: int
    paths_revalued: int
    candidates: int
    attempts: int
    fallback: bool
    max_bound: float
    grid_nodes: tuple
    exact_rows: int

    def section(self) -> dict:
        return {"mode": self.mode, "paths": self.paths, "paths_revalued": self.paths_revalued,
                "candidates": self.candidates, "attempts": self.attempts, "fallback": self.fallback,
                "max_screen_bound": self.max_bound, "grid_nodes": list(self.grid_nodes),
                "exact_rows": self.exact_rows}


def _rows(book: Book, keep: np.ndarray) -> Book:
    """The rows ``keep`` (boolean, host) of ``book``, padded to a bucket (at least one padding row)."""
    idx = np.flatnonzero(keep)
    sub = dataclasses.replace(book, **{name: jnp.asarray(getattr(book, name))[idx] for name in PAD_ROW})
    return pad_book(sub, bucket_size(max(len(idx), 1), minimum=1))


def split_expiring(book: Book, params: ScenarioParams) -> tuple[Book, Book, int]:
    """(book without the options expiring within the horizon, those options alone, how many)."""
    horizon = float(params.horizon_years)
    q = np.asarray(book.quantity)
    expiring = (np.asarray(book.kind) == OPTION) & (np.asarray(book.expiry_years) <= horizon) & (q != 0)
    smooth = dataclasses.replace(book, quantity=jnp.asarray(np.where(expiring, 0.0, q), q.dtype))
    return smooth, _rows(book, expiring), int(expiring.sum())


def _usd_values(book: Book, params: ScenarioParams, r, x):
    """USD value of each row of ``book`` when each underlying moves by (r, x) (arrays (u,))."""
    u = book.underlying
    return book.quantity * unit_value_usd(book, jnp.exp(r)[u], (params.atm_vol * jnp.expm1(x))[u],
                                          params.horizon_years, params.vol_floor)


@functools.partial(jax.jit, static_argnums=0)
def path_moves(model: ScenarioModel, book: Book, params: ScenarioParams, key, idx):
    """(r (u,), x (u,)) of each path of ``idx`` as one (paths, 2u) array (``book`` is unused: the signature of
    ``montecarlo.map_paths``'s functions)."""
    def one(i):
        return jnp.concatenate(factor_moves(params, *model.factors(params, key, i)))
    return jax.vmap(one)(idx)


@jax.jit
def expiring_values(expiring: Book, params: ScenarioParams, moves):
    """USD value of the ``expiring`` options (expired by the horizon's end) on each path of ``moves`` (paths, 2u):
    the intrinsic value on the scaled forward, as the kernel's Black-76 at T = 0 gives it -> (paths,)."""
    b = jax.tree_util.tree_map(lambda a: a[None], expiring)  # rows on axis 1, paths on axis 0
    scale = jnp.exp(moves[:, : moves.shape[1] // 2])[:, expiring.underlying]  # (paths, rows)
    sign = jnp.where(b.is_call, 1.0, -1.0)
    intrinsic = jnp.maximum(sign * (b.forward * scale - b.strike), 0.0)
    per_coin = jnp.where(b.inverse, intrinsic * (b.spot / b.forward), intrinsic)
    return jnp.sum(b.quantity * per_coin, axis=1)


def draw_moves(model: ScenarioModel, book: Book, params: ScenarioParams, *, seed: int, paths: int, chunk: int,
               devices=None, progress=None) -> np.ndarray:
    """(r, x) of paths 0..paths-1, (paths, 2u) on the host: the same draws as full revaluation, shared by every
    account screened on them."""
    idx = np.arange(paths, dtype=np.uint32)
    outs, valid = map_paths(path_moves, model, book, params, seed, idx, chunk, devices, progress,
                            "pmjax monte carlo (screen)")
    return np.concatenate([np.asarray(o)[:v] for o, v in zip(outs, valid)])


@jax.jit
def value_grid(book: Book, params: ScenarioParams, r_nodes, x_nodes):
    """(G, |G|), each (u, nr, nx): the USD value of each underlying's rows (and the sum of their absolute
    values) at every node; ``r_nodes`` (u, nr), ``x_nodes`` (u, nx). One row of nodes at a time."""
    member = book.underlying[:, None] == jnp.arange(len(UNDERLYINGS), dtype=book.underlying.dtype)[None, :]

    def at_r(r):  # r: (u,) -> (nx, u) twice
        def at_x(x):
            v = _usd_values(book, params, r, x)
            return (jnp.where(member, v[:, None], 0.0).sum(axis=0),
                    jnp.where(member, jnp.abs(v)[:, None], 0.0).sum(axis=0))
        return jax.vmap(at_x, in_axes=1, out_axes=1)(x_nodes)

    g, a = jax.lax.map(at_r, r_nodes.T)  # (nr, u, nx)
    return jnp.moveaxis(g, 1, 0), jnp.moveaxis(a, 1, 0)


def _cubic_weights(t, n: int):
    """Node of the 4-point stencil's start and its Lagrange weights at grid coordinate ``t`` (n nodes)."""
    i = jnp.clip(jnp.floor(t), 1, n - 3)
    s = t - i
    w = jnp.stack([-s * (s - 1) * (s - 2) / 6, (s + 1) * (s - 1) * (s - 2) / 2,
                   -(s + 1) * s * (s - 2) / 2, (s + 1) * s * (s - 1) / 6], axis=-1)
    return i.astype(jnp.int32) - 1, w


def interpolate(grid, t_r, t_x):
    """Tensor-product cubic interpolation of ``grid`` (nr, nx) at grid coordinates (t_r, t_x), each (p,)."""
    nr, nx = grid.shape
    ir, wr = _cubic_weights(t_r, nr)
    ix, wx = _cubic_weights(t_x, nx)
    four = jnp.arange(4, dtype=ir.dtype)
    flat = (ir[:, None, None] + four[None, :, None]) * nx + ix[:, None, None] + four[None, None, :]
    patch = jnp.take(grid.ravel(), flat.reshape(-1, 16), axis=0).reshape(-1, 4, 4)  # (p, 4, 4)
    return jnp.sum(wr[:, :, None] * patch * wx[:, None, :], axis=(1, 2))


@jax.jit
def cell_bounds(grid):
    """Per fine cell (u, nr - 1, nx - 1): the largest |fine - coarse| over the cell and its neighbours, the
    difference taken at every node and mid-point of the fine grid. A path's interpolation error is bounded by
    a multiple of its cell's value: where the value is smooth the fine cubic's error is ~1/16 of the coarse
    one's, and taking the maximum over the cell keeps a point where the two happen to agree from passing for
    an exact one."""
    n_u, nr, nx = grid.shape
    tr = jnp.arange(2 * nr - 1, dtype=grid.dtype) / 2
    tx = jnp.arange(2 * nx - 1, dtype=grid.dtype) / 2
    t_r, t_x = (a.ravel() for a in jnp.meshgrid(tr, tx, indexing="ij"))
    out = []
    for u in range(n_u):
        gap = jnp.abs(interpolate(grid[u], t_r, t_x) - interpolate(grid[u, ::2, ::2], t_r / 2, t_x / 2))
        gap = gap.reshape(2 * nr - 1, 2 * nx - 1)
        cell = jax.lax.reduce_window(gap, -jnp.inf, jax.lax.max, (3, 3), (2, 2), "VALID")  # (nr-1, nx-1)
        out.append(jax.lax.reduce_window(cell, -jnp.inf, jax.lax.max, (3, 3), (1, 1), "SAME"))
    return jnp.stack(out)


@jax.jit
def screen(moves, exact, grid, bounds, abs_grid, width, lo, step, today_usd, spot, margin_coin):
    """Screened loss, its interpolation bound (before the safety factor) and a rounding floor, each (p,) in the
    margin currency, of paths ``moves`` (p, 2u) whose expiring rows are worth ``exact`` (p,) USD;
    ``bounds``: ``cell_bounds(grid)``; ``lo``/``step``: (u, 2) grid origin and spacing in (asinh(r / width), x):
    the return nodes are dense where the paths are and sparse in the far tails."""
    n_u, nr, nx = grid.shape
    r, x = moves[:, :n_u], moves[:, n_u:]
    value, gap = exact, jnp.zeros_like(exact)
    for u in range(n_u):
        t_r = (jnp.arcsinh(r[:, u] / width[u]) - lo[u, 0]) / step[u, 0]
        t_x = (x[:, u] - lo[u, 1]) / step[u, 1]
        cell = bounds[u].ravel()[jnp.clip(jnp.floor(t_r), 0, nr - 2).astype(jnp.int32) * (nx - 1)
                                 + jnp.clip(jnp.floor(t_x), 0, nx - 2).astype(jnp.int32)]
        value, gap = value + interpolate(grid[u], t_r, t_x), gap + cell
    floor = 64.0 * jnp.finfo(grid.dtype).eps * (abs_grid.max(axis=(1, 2)).sum() + jnp.abs(exact))
    c = jnp.maximum(margin_coin, 0)
    coin = margin_coin >= 0
    to_margin = jnp.where(coin, 1.0 / (spot[c] * jnp.exp(r[:, c])), 1.0)
    today = jnp.where(coin, today_usd / spot[c], today_usd)
    return today - value * to_margin, gap * to_margin, floor * to_margin


def _nodes(lo_hi: np.ndarray, n: int) -> tuple[np.ndarray, float, float]:
    """``n`` equally spaced nodes covering [lo, hi] (a degenerate range widened a little)."""
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    pad = max(1e-9, 1e-9 * abs(lo))
    if not hi - lo > 2 * pad:
        lo, hi = lo - pad, hi + pad
    step = (hi - lo) / (n - 1)
    return lo + step * np.arange(n), lo, step


#: paths per call of ``screen`` (bounds its (paths, 4, 4) patches)
SCREEN_CHUNK = 1 << 16


def screened_losses(book: Book, model: ScenarioModel, params: ScenarioParams, *, seed: int, paths: int,
                    chunk: int, devices=None, progress=None,
                    moves: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(screened loss, cell bound, rounding floor), each (paths,) in the margin currency, and the number of
    rows valued per path (steps 1-2 of the module docstring). ``moves``: ``draw_moves``' output, when shared."""
    if moves is None:
        moves = draw_moves(model, book, params, seed=seed, paths=paths, chunk=chunk, devices=devices,
                           progress=progress)
    smooth, expiring, n_expiring = split_expiring(book, params)
    n_u = len(UNDERLYINGS)
    dtype = np.asarray(book.quantity).dtype
    r_nodes, x_nodes, lo, step = [], [], np.zeros((n_u, 2)), np.zeros((n_u, 2))
    # the return coordinate is asinh(r / width), width the sd of r (unit-variance factors: vol sqrt(tau))
    width = np.maximum(np.asarray(params.vol, np.float64) * np.sqrt(float(params.horizon_years)), 1e-12)
    low, high = moves.min(axis=0), moves.max(axis=0)
    for u in range(n_u):
        for k, (count, target) in enumerate(zip(NODES, (r_nodes, x_nodes))):
            j = u + k * n_u
            span = np.array([low[j], high[j]], np.float64)
            nodes, lo[u, k], step[u, k] = _nodes(np.arcsinh(span / width[u]) if k == 0 else span, count)
            target.append(width[u] * np.sinh(nodes) if k == 0 else nodes)
    grid, abs_grid = value_grid(smooth, params, jnp.asarray(np.array(r_nodes), dtype),
                                jnp.asarray(np.array(x_nodes), dtype))
    args = (grid, cell_bounds(grid), abs_grid, jnp.asarray(width, dtype), jnp.asarray(lo, dtype),
            jnp.asarray(step, dtype), today_value(book), jnp.asarray(book.underlying_spot),
            jnp.asarray(book.margin_coin))
    size = min(SCREEN_CHUNK, bucket_size(paths, minimum=1))
    devices = list(devices) if devices is not None else jax.local_devices()
    outs = []
    for k, start in enumerate(range(0, paths, size)):  # chunks dealt round the devices, run concurrently
        part = np.zeros((size, moves.shape[1]), dtype)
        part[: min(size, paths - start)] = moves[start:start + size]
        part = jax.device_put(part, devices[k % len(devices)])
        outs.append(screen(part, expiring_values(expiring, params, part), *args))
    parts = [[np.asarray(a)[: min(size, paths - start)] for a in out] for out, start in zip(outs, range(0, paths, size))]
    loss, gap, floor = (np.concatenate(c).astype(np.float64) for c in zip(*parts))
    return loss, gap, floor, n_expiring


@jax.jit
def today_value(book: Book):
    """Today's USD value of ``book`` (no move, no time)."""
    q = book.quantity
    return jnp.sum(q * unit_value_usd(book, jnp.ones_like(q), jnp.zeros_like(q), 0.0))


def exact_tail_losses(book: Book, model: ScenarioModel, params: ScenarioParams, *, seed: int, paths: int,
                      top: int, chunk: int, devices=None, progress=None, safety: float = SAFETY,
                      moves: np.ndarray | None = None) -> tuple[np.ndarray, ScreenReport]:
    """Losses of paths 0..paths-1 (margin currency) whose ``top`` largest, and their order, are those of full
    revaluation: the candidates revalued in full, the other paths screened (module docstring, steps 1-4).
    ``moves``: the paths' (r, x) from ``draw_moves`` when several accounts share them."""
    top = max(1, min(int(top), paths))
    loss, gap, floor, n_expiring = screened_losses(book, model, params, seed=seed, paths=paths, chunk=chunk,
                                                   devices=devices, progress=progress, moves=moves)
    exact = np.full(paths, np.nan)
    bound = safety * gap + floor
    full_chunk = min(chunk, 1 << max(0, (paths - 1).bit_length()))  # what full revaluation of every path uses
    revalued = 0

    def revalue(indices):
        nonlocal revalued
        todo = indices[np.isnan(exact[indices])]
        if len(todo):
            # the chunk of full revaluation, not one shrunk to the candidates: the same compiled program, so
            # each path's loss is bitwise the full run's on any number of devices
            outs, valid = map_paths(path_losses, model, book, params, seed, todo.astype(np.uint32), full_chunk,
                                    devices, False, "", shrink=False)
            exact[todo] = np.concatenate([np.asarray(o)[:v] for o, v in zip(outs, valid)])
            revalued += len(todo)

    for attempt in range(1, ATTEMPTS + 1):
        lower, upper = loss - bound, loss + bound
        threshold = np.partition(lower, paths - top)[paths - top]  # the top-th largest lower bound
        candidates = np.flatnonzero(upper >= threshold)
        others = np.setdiff1d(np.arange(paths), candidates, assume_unique=True)
        sample = others[np.unique(np.linspace(0, len(others) - 1, min(SAMPLE_CHECK, len(others))).astype(int))] \
            if len(others) else others
        checked = np.concatenate([candidates, sample])
        revalue(checked)
        e = exact[checked]
        if np.all((e >= lower[checked]) & (e <= upper[checked])):
            out = loss.copy()
            out[checked] = e
            return out, ScreenReport("exact_tail", paths, revalued, len(candidates), attempt, False,
                                     float(bound.max()), NODES, n_expiring)
        bound = bound * WIDEN
    full = simulate_losses(book, model, params, paths=paths, seed=seed, chunk=chunk, devices=devices,
                           progress=progress)
    return full, ScreenReport("exact_tail", paths, revalued + paths, paths, ATTEMPTS, True, float(bound.max()),
                              NODES, n_expiring)

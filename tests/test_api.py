"""The public API: every name pmjax exports resolves, importing pmjax changes no JAX setting, float64
without x64 is a clear error, and the examples of docs/api.md run as written."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import pmjax

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


@pytest.mark.parametrize("name", pmjax.__all__)
def test_every_public_name_resolves(name):
    assert getattr(pmjax, name) is not None
    assert name in dir(pmjax)


def test_unknown_name_is_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        pmjax.no_such_thing  # noqa: B018


def test_import_changes_no_jax_setting_and_float64_without_x64_is_a_clear_error():
    r = _run("""
        import jax
        before = {k: getattr(jax.config, k) for k in ("jax_enable_x64", "jax_numpy_rank_promotion",
                                                      "jax_numpy_dtype_promotion", "jax_default_matmul_precision",
                                                      "jax_enable_compilation_cache", "jax_compilation_cache_dir",
                                                      "jax_persistent_cache_min_compile_time_secs",
                                                      "jax_persistent_cache_min_entry_size_bytes")}
        import pmjax
        for name in pmjax.__all__:
            getattr(pmjax, name)
        after = {k: getattr(jax.config, k) for k in before}
        assert before == after, (before, after)
        assert not jax.config.jax_enable_x64
        import jax.numpy as jnp
        market = pmjax.load_market()
        book, _ = pmjax.book_from_portfolio(pmjax.make_portfolio(
            [pmjax.Position(pmjax.parse_instrument("BTC-27MAR26-100000-C"), 1.0)]), market, dtype=jnp.float32)
        assert book.quantity.dtype == jnp.float32
        try:
            pmjax.book_from_portfolio(pmjax.make_portfolio(
                [pmjax.Position(pmjax.parse_instrument("BTC-27MAR26-100000-C"), 1.0)]), market)
        except ValueError as e:
            print("ERROR:", e)
        else:
            raise SystemExit("float64 without x64 did not raise")
    """)
    assert r.returncode == 0, r.stderr
    msg = r.stdout.split("ERROR:", 1)[1]
    assert "jax_enable_x64" in msg and "float32" in msg


def _api_examples() -> list[str]:
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_api_doc_has_examples():
    assert len(_api_examples()) >= 4


@pytest.mark.slow
def test_api_doc_examples_run_as_written():
    """Each ```python block of docs/api.md, run in order in one fresh interpreter (as a reader would paste
    them), from the repository root."""
    code = "\n\n".join(_api_examples())
    r = _run(code)
    assert r.returncode == 0, f"docs/api.md examples failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"

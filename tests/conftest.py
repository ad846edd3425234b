"""Tests run in float64 with strict dtype promotion and rank promotion raising, so a silent float32/float64
mix or an implicit broadcast between arrays of different rank is an error; pyproject's addopts turns on
jaxtyping + beartype run-time checks of every pmjax annotation (shapes included)."""

import contextlib
import logging
import os
import pathlib
import sys

# JAX's persistent compilation cache, shared by this process and every test subprocess (they inherit the
# environment): identical programs (the same HLO, flags and JAX version) compile once per run, and a rerun
# compiles nothing. Compiled programs are the same executables, so no figure depends on it. PMJAX_TEST_JAX_CACHE
# names another folder, or "off". The pmjax command (main() in process, or a subprocess) uses the same folder
# through PMJAX_JAX_CACHE, never the user's cache folder.
_CACHE = os.environ.get("PMJAX_TEST_JAX_CACHE",
                        str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax-compilation-cache"))
if _CACHE != "off":
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
os.environ["PMJAX_JAX_CACHE"] = os.environ["JAX_COMPILATION_CACHE_DIR"] if _CACHE != "off" else "off"

import jax  # noqa: E402

if _CACHE != "off":  # jax may have been imported (by a pytest plugin) before the environment was set
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = pathlib.Path(__file__).resolve().parent

# tests/reference (numpy references, synthetic books) imports as ``reference``, here and in the test
# subprocesses (``python -c SCRIPT`` inherits PYTHONPATH)
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                          if p and p != str(TESTS)])
SHARED_DATA = pathlib.Path(os.environ.get("PMJAX_SHARED_DATA", REPO.parent / "shared" / "data"))


def tree_allclose(a, b, rtol=1e-12, atol=0.0) -> bool:
    """True when two pytrees have the same structure and allclose leaves."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    return ta == tb and all(np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol) for x, y in zip(la, lb))


class CompileLog(logging.Handler):
    """The messages of JAX's logger while ``jax.log_compiles()`` is on."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def compiles(self, name: str = "") -> int:
        """How many compilations were logged whose message names ``name`` (all when empty)."""
        return sum(m.startswith("Compiling") and name in m for m in self.messages)


@contextlib.contextmanager
def _compile_log():
    log, logger = CompileLog(), logging.getLogger("jax")
    logger.addHandler(log)
    try:
        with jax.log_compiles():
            yield log
    finally:
        logger.removeHandler(log)


@pytest.fixture
def compile_log():
    """A context manager factory: ``with compile_log() as log: ...; log.compiles("span_margin")``."""
    return _compile_log


@pytest.fixture(scope="session")
def market():
    import pmjax

    return pmjax.load_market()


#: tests that read ../shared/data (present in CI and dev checkouts) carry this mark
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"shared data not at {SHARED_DATA}")


__all__ = ["SHARED_DATA", "jnp", "needs_shared_data", "tree_allclose"]

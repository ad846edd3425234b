"""JAX's persistent compilation cache for pmjax's programs (README, "Start-up and the compilation cache";
docs/methodology.md section 1).

A compiled program is stored on disk under a key of its HLO, the compile options, the backend and the JAX version,
so a later process that builds the same program (a book of the same bucket size, the same method and dtype) loads
it instead of compiling it. The executables are the same, so no figure depends on the cache.

``import pmjax`` changes no JAX setting: the ``pmjax`` command turns the cache on (``cli_compilation_cache``), a
library user calls ``enable_compilation_cache``. This module imports nothing heavy at its top (JAX is imported
when the cache is turned on), so the command's parser stays fast.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Mapping

#: the environment variable that turns the command's cache off (``off``) or moves it (a folder)
ENV = "PMJAX_JAX_CACHE"
#: values of ``PMJAX_JAX_CACHE`` that turn the cache off
OFF = ("off", "0", "false", "no", "none")


def default_cache_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """The user's cache folder for pmjax's compiled programs: ``$XDG_CACHE_HOME/pmjax/jax`` or
    ``~/.cache/pmjax/jax`` (``~/Library/Caches/pmjax/jax`` on macOS, ``%LOCALAPPDATA%\\pmjax\\jax`` on Windows)."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if env.get("XDG_CACHE_HOME"):
        base = env["XDG_CACHE_HOME"]
    elif platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches")
    elif platform.startswith("win") and env.get("LOCALAPPDATA"):
        base = env["LOCALAPPDATA"]
    else:
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pmjax", "jax")


def writable_dir(path: str) -> str | None:
    """None when ``path`` is (or can be made) a folder a file can be written to, else the reason it cannot."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def enable_compilation_cache(path: str | None = None, *, min_compile_time_secs: float = 0.0,
                             min_entry_size_bytes: int = -1) -> str | None:
    """Turn on JAX's persistent compilation cache in ``path`` (default ``default_cache_dir()``) for every program
    this process compiles from now on; returns the folder, or None (cache left off) when it cannot be written.

    The thresholds default to caching every program (JAX's own defaults skip programs that compile in under a
    second, most of pmjax's). This sets global JAX options (``jax_compilation_cache_dir`` and the two
    ``jax_persistent_cache_min_*``); ``import pmjax`` never calls it.
    """
    path = os.path.abspath(os.path.expanduser(path or default_cache_dir()))
    if writable_dir(path) is not None:
        return None
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    changed = not jax.config.jax_enable_compilation_cache or jax.config.jax_compilation_cache_dir != path
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
    if changed:  # JAX opens its cache at the first compile: a later change needs a reset to take effect
        compilation_cache.reset_cache()
    return path


def disable_compilation_cache() -> None:
    """Turn JAX's persistent compilation cache off for this process (``JAX_COMPILATION_CACHE_DIR`` included)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if jax.config.jax_enable_compilation_cache:
        jax.config.update("jax_enable_compilation_cache", False)
        compilation_cache.reset_cache()


def cli_compilation_cache(notice: Callable[[str], None], environ: Mapping[str, str] | None = None) -> str | None:
    """The ``pmjax`` command's cache, set before anything compiles; returns its folder or None (off).

    ``PMJAX_JAX_CACHE=off`` turns it off; ``PMJAX_JAX_CACHE=DIR`` puts it in DIR; otherwise an explicit
    ``JAX_COMPILATION_CACHE_DIR`` (with JAX's ``JAX_PERSISTENT_CACHE_MIN_*`` if given) is kept, else the user's cache
    folder (``default_cache_dir``). A folder that cannot be written turns the cache off with one notice.
    """
    env = os.environ if environ is None else environ
    setting = env.get(ENV, "").strip()
    if setting.lower() in OFF:
        disable_compilation_cache()
        return None
    path = setting or env.get("JAX_COMPILATION_CACHE_DIR") or default_cache_dir(env)
    kwargs = {}
    if not setting and env.get("JAX_COMPILATION_CACHE_DIR"):  # JAX's own variables, as JAX reads them
        if env.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
            kwargs["min_compile_time_secs"] = float(env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
        if env.get("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"):
            kwargs["min_entry_size_bytes"] = int(env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"])
    why = writable_dir(os.path.abspath(os.path.expanduser(path)))
    if why is not None:
        notice(f"compilation cache off: cannot write to {path} ({why}); set {ENV}=off to silence this")
        disable_compilation_cache()
        return None
    return enable_compilation_cache(path, **kwargs)

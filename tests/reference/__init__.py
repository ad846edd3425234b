"""Reference implementations the tests compare pmjax against (numpy copies, independent of the library's
``pmjax.bench``, which may change for speed); the synthetic books come from ``pmjax.bench.books`` (data, not a reference)."""

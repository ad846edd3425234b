"""Reference implementations the tests compare pmjax against (numpy copies, independent of the library's
``pmjax.bench``, which may change for speed), and the synthetic books the tests use."""

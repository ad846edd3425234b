"""``pmjax bench``: pmjax's kernels timed next to numpy baselines of the same computations in one run.

``harness`` runs the rows and builds the document, ``rows`` times each row, ``baselines`` holds the numpy
baselines, ``books`` the synthetic books, ``format`` the text table."""

from pmjax.bench.format import format_bench
from pmjax.bench.harness import run_bench, use_all_cpu_cores

__all__ = ["format_bench", "run_bench", "use_all_cpu_cores"]

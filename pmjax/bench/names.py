"""The row names of ``pmjax bench`` (``--only``), in a module that imports nothing heavy, so the command's
``--help`` and argument errors answer without importing JAX. ``pmjax.bench.rows`` re-exports them."""

ROW_NAMES = ("black76_f32", "black76_autodiff_f32", "black76_price_f32", "black76_f64", "black76_autodiff_f64",
             "black76_f64_quantlib", "span_accounts", "mc_revaluations", "mc_var_exact_tail", "var_accounts", "hedge_map", "what_if_latency",
             "what_if_latency_span_deribit", "monitor_update", "monitor_update_one_account",
             "margin_10k_positions_rules", "margin_10k_positions_span", "margin_10k_positions_deribit", "compile")

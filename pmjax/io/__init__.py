"""Layer 1: files in and out: documents (YAML/JSON), the packaged default configs, markets (files and
Deribit chains), portfolios, many-account inputs, price/DVOL history, and SPAN risk parameter files (SPEC section
6's layout, ``risk_parameters``; CME's expanded positional format, ``span_pa2``). Validation happens here."""

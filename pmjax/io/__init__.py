"""Layer 1: files in and out: documents (YAML/JSON), the packaged default configs, markets (files and
Deribit chains), portfolios, many-account inputs and price/DVOL history. Validation happens here."""

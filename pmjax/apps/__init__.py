"""Layer 5: applications on the measures: the margin document (``margin``), what-if, monitor, report,
many-account stress, risk-parameter files, backtest, calibration, the demo and Deribit's pme/simulate check."""

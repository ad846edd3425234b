"""Layer 5: applications on the measures: the margin document (``margin``), what-if, the marginal margin map and
the margin-minimising hedge (``hedge_map``, ``hedge``, ``hedge_program``), monitor, report, many-account stress,
risk-parameter files out (``risk_file``) and in (``supplied``), backtest, calibration, the demo and Deribit's
pme/simulate check."""

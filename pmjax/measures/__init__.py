"""Layer 4: the margin measures, three doors each (``x_params``, ``x_margin``, ``x_section``): ``span``,
``deribit``, ``var`` (Monte Carlo VaR/ES), ``rules``; and portfolio-margin ``qualification``."""

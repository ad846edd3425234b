"""Layer 4: the margin measures, three doors each (``x_params``, ``x_margin``, ``x_section``): ``span`` (pmjax's
own pricing) and ``span_arrays`` (an exchange's supplied risk arrays), both on the commodity rules of
``span_rules``; ``deribit``; ``var`` (Monte Carlo VaR/ES); ``tims`` (the TIMS-style preset); ``rules``; and
portfolio-margin ``qualification``."""

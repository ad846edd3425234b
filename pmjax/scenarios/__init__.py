"""Layer 3: scenario sets, each turning a ``Book`` into a batch of ``Shock`` s: the SPAN and Deribit grids
(``grids``), the TIMS-style valuation points (``tims_grid``), named joint moves and stress days (``named``,
``stress_days``), Monte Carlo models (``montecarlo``, ``mc_models``) and historical days (``historical``)."""

"""Layer 0: instruments, units, validation, market and portfolio data, the ``Book`` pytree, the valuation
kernel (Black-76, ``Shock``, scenario P&L) and Greeks. Imports nothing else of pmjax."""

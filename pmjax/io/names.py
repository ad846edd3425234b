"""Names the command line shows before anything heavy is imported (this module imports nothing): the default
market. ``pmjax.io.market`` re-exports it."""

#: the bundled market used when none is given (``pmjax.io.market.BUNDLED_MARKETS``)
DEFAULT_MARKET = "deribit-20260102"

"""Names and defaults of the applications that the command line's parser shows (choices, defaults, help), in a
module that imports nothing heavy, so ``pmjax --help`` and argument errors answer without importing JAX. The
application modules re-export them (``pmjax.apps.hedge.HEDGE_METHODS`` is this module's)."""

import os

#: the margin methods of ``pmjax margin`` in document order (the keys of ``pmjax.apps.margin.METHODS``)
MARGIN_METHODS = ("rules", "span", "deribit", "var", "tims")
#: methods a hedge can minimise, and its default candidates (``pmjax.apps.hedge``)
HEDGE_METHODS = ("span", "deribit", "var")
DEFAULT_INSTRUMENTS = ("futures", "perpetuals")
#: methods with a marginal margin map, and the instrument kinds a map can list (``pmjax.apps.hedge_map``)
MAP_METHODS = ("span", "deribit", "var")
KINDS = ("options", "futures", "perpetuals")
#: monitor statuses that are a margin call (the liquidation warning comes on top of one; ``pmjax.apps.monitor``)
CALL_STATUSES = ("margin_call", "liquidation_warning")
#: where ``pmjax demo`` writes its report unless ``--out`` says otherwise (``pmjax.apps.demo``)
DEMO_OUT = os.path.join("reports", "demo")
#: anti-procyclicality tools of the calibration's daily rule (``pmjax.apps.calibrate_ranges``)
APC_TOOLS = ("floor", "stress", "buffer")
#: naked legs the rules text table lists without --detail (``pmjax.apps.tables``)
TOP_NAKED = 10

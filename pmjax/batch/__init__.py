"""Layer 2: many accounts or paths at once: stacking padded books (``accounts``), memory-sized chunks and
the one chunked, sharded map over accounts or paths (``sharding``)."""

"""One module per ``pmjax`` command: ``add_arguments(parser)`` and ``run(args) -> (document, text)``."""

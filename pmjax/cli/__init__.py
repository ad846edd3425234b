"""The ``pmjax`` command line: ``main`` parses the arguments and runs one command of ``pmjax.cli.commands``."""

from pmjax.cli.app import main

__all__ = ["main"]

"""The ``pmjax`` command line (SPEC section 1).

Each command lives in ``pmjax/cli/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> (document, text)``; ``--json`` prints the document, otherwise the text.

Parsing imports no JAX (nor numpy): a command module imports only light names at its top (``pmjax.apps.names``,
``pmjax.io.names``, ``pmjax.bench.names``, errors) and the heavy ones in ``run``, so ``pmjax --help`` and argument
errors answer at once. Before a command runs, JAX's persistent compilation cache is turned on
(``pmjax.core.jax_cache.cli_compilation_cache``: the user's cache folder, ``PMJAX_JAX_CACHE=off`` or a folder).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback

from pmjax.core.errors import InputError, MissingDependency
from pmjax.core.jax_cache import cli_compilation_cache

#: command name -> one-line help; modules are imported only when their command runs
COMMANDS = {
    "bench": "throughput and latency table, with numpy/scipy baselines measured in the same run",
    "calibrate": "SPAN scan ranges from price and DVOL history, with backtest statistics",
    "demo": "the seed portfolios on the bundled real market, every method side by side",
    "price": "price and Greeks of instruments (1 coin long each)",
    "margin": "margin of one account by every method (rules, span, deribit, var)",
    "hedge": "the trades (futures, perpetuals, options) that minimise one method's margin plus trading cost",
    "hedge-map": "marginal margin of every listed contract (d margin / d quantity), best and worst per method",
    "monitor": "replay market updates over many accounts: equity against margin, margin calls, event log and plot",
    "report": "HTML report with plots (risk arrays, P&L histogram, margin bars, contributions) and JSON",
    "stress": "many accounts at once (a directory or a multi-account file), with optional named scenarios",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage too)
        raise InputError(f"{self.prog}: {message}")


def _common(p: argparse.ArgumentParser, *, top: bool) -> None:
    """The global flags. They are accepted before the command (``pmjax --json price ...``) and after it
    (``pmjax price --json ...``): the subcommand's copies default to SUPPRESS, so a flag given before the
    command is not reset by the subcommand's default."""
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)  # noqa: E731
    p.add_argument("--json", action="store_true", default=d(False),
                   help="print one JSON document on stdout and nothing else")
    p.add_argument("--debug", action="store_true", default=d(False), help="show Python tracebacks")
    p.add_argument("--precision", choices=("float64", "float32"), default=d("float64"),
                   help="floating-point precision of the computation (default float64)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pmjax", description="Portfolio margin for crypto options books, in JAX.")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p, top=False)
        importlib.import_module(f"pmjax.cli.commands.{name.replace('-', '_')}").add_arguments(p)
    return parser


def dtype_of(args):
    import jax.numpy as jnp

    return jnp.float32 if getattr(args, "precision", "float64") == "float32" else jnp.float64


def notice(message: str) -> None:
    """One line on stderr, with or without --json (stdout stays the one document)."""
    print(f"pmjax: notice: {message}", file=sys.stderr)


#: notices printed one per line before the rest are counted (``--debug`` prints every one)
MAX_NOTICES = 10
_SETTINGS = {"all_notices": False}


def notices(messages) -> None:
    """One line each, the first ``MAX_NOTICES`` of them and a count of the rest (a 5,000-position book of unlisted
    strikes would print thousands)."""
    messages = list(messages)
    shown = messages if _SETTINGS["all_notices"] else messages[:MAX_NOTICES]
    for m in shown:
        notice(m)
    if len(shown) < len(messages):
        notice(f"... and {len(messages) - len(shown):,} more notices (--debug prints every one)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    _SETTINGS["all_notices"] = debug
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 unless --precision float32
        cli_compilation_cache(notice)  # before anything compiles
        from pmjax.io.documents import to_jsonable

        doc, text = importlib.import_module(f"pmjax.cli.commands.{args.command.replace('-', '_')}").run(args)
        if doc is None and text is None:  # a streaming command wrote its own output (monitor --follow)
            return 0
        if args.json:
            sys.stdout.write(json.dumps(to_jsonable(doc), indent=1) + "\n")
        else:
            sys.stdout.write(text.rstrip("\n") + "\n")
        return 0
    except InputError as e:
        if debug:
            traceback.print_exc()
        print(f"pmjax: error: {e}", file=sys.stderr)
        return 2
    except MissingDependency as e:
        print(f"pmjax: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pmjax: error: interrupted", file=sys.stderr)
        return 1
    except Exception as e:  # anything else is our fault: say so in one line
        if debug:
            traceback.print_exc()
        print(f"pmjax: error: internal error: {type(e).__name__}: {e} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``greenshift`` command line: list, train, profile, search, trials, report, pick, compare, export, evaluate.

``main(argv) -> int`` never raises for a user's mistake: any :class:`~greenshift.errors.GreenshiftError`
becomes one line ``greenshift: error: <message>`` on stderr and exit code 2 (``--debug`` re-raises it
with its traceback), argparse usage errors exit 2 with one line too, and Ctrl-C exits 130. Errors of
the library name settings by their Python names (``max_epochs``); the line shows the flag
(``--max-epochs``).

Each command is a thin shell in its own module: it parses, resolves its settings with the library
(:func:`greenshift.search.settings.resolve_search_settings`,
:func:`greenshift.train.settings.resolve_train_settings`), calls one library function and formats the
result. Heavy libraries (torch, matplotlib) are imported inside the command that needs them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from greenshift.cli import export, listing, report, search, train, trials
from greenshift.cli.common import PROG, Formatter, Parser, flags_of, one_line, with_flags
from greenshift.errors import ConfigError, GreenshiftError

#: The modules that add commands, in the order of ``greenshift --help``.
_COMMAND_MODULES = (listing, train, search, trials, report, export)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help, --version and usage errors: return the code, never exit
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return int(args.handler(args) or 0)
    except GreenshiftError as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {one_line(_message(exc, parser, args.command))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`greenshift models --json | head`): not an error of ours. Point stdout at
        # /dev/null so that the interpreter's final flush does not fail again.
        _discard_stdout()
        return 128 + 13  # what a process killed by SIGPIPE reports


def _message(error: GreenshiftError, parser: argparse.ArgumentParser, command: str) -> str:
    """The error's message, the settings it names written as the command's flags."""
    if not isinstance(error, ConfigError) or not error.fields:
        return str(error)
    from greenshift.search.settings import CONFIG_KEYS

    aliases = {name: key for key, name in CONFIG_KEYS.items()}
    return with_flags(error, flags_of(_subparser(parser, command)), aliases)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    return parser


def _discard_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no real file (captured in tests)
        pass


def build_parser() -> argparse.ArgumentParser:
    """The complete argument parser (also used by ``scripts/gen_cli_docs.py``)."""
    parser = Parser(
        prog=PROG,
        description="Search Deep Shift Neural Networks that are both accurate and cheap in inference energy.",
        formatter_class=Formatter,
        epilog=(
            "examples:\n"
            "  greenshift search --dataset digits --backbone resnet20 --out runs/demo --preset demo\n"
            "  greenshift report runs/demo\n"
            "  greenshift pick runs/demo --knee\n\n"
            "Run 'greenshift COMMAND --help' for the options of a command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of errors instead of one line"
    )
    # Subcommands accept --debug as well; SUPPRESS keeps a global --debug from being reset by them.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of errors instead of one line",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    def command(
        name: str, summary: str, description: str, epilog: str | None = None
    ) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=epilog,
            parents=[common],
            formatter_class=Formatter,
        )

    for module in _COMMAND_MODULES:
        module.add_commands(command)
    return parser


def _version() -> str:
    from greenshift import __version__

    return __version__


__all__ = ["build_parser", "main"]

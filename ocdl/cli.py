"""The ``ocdl`` command. Each sub-command lives in ``ocdl/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.

Bad input raises :class:`ocdl.errors.OcdlError`; it is printed as one line
``ocdl: error: …`` on stderr and the exit code is 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ocdl.errors import OcdlError

COMMANDS = ("tableau", "train", "bench", "compare", "verify", "stability", "run", "reproduce", "demo")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage first otherwise)
        sys.stderr.write(f"ocdl: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ocdl", description="Deep learning as discrete optimal control.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"ocdl.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"ocdl.commands.{name}":
                continue  # a command not built yet
            raise
        mod.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OcdlError as e:
        sys.stderr.write(f"ocdl: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("ocdl: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``ocdl`` command. Each sub-command lives in ``ocdl/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.

Bad input raises :class:`ocdl.errors.OcdlError`; it is printed as one line
``ocdl: error: …`` on stderr and the exit code is 2.

Ctrl-C ends every command with one line ``ocdl: interrupted`` and exit code 130, whenever it
comes: while the parser is built (the command modules import), while a command runs, while an
error line is written, and after the command, while the interpreter shuts down (joining threads,
running atexit callbacks, flushing the output). Python itself would print a traceback there
("Exception ignored in …") and exit 0, or, once it has restored SIGINT's default action late in
its finalisation, die by the signal (exit −2). So :func:`main` called as the process's entry
point (without arguments: the ``ocdl`` script, ``python -m ocdl``) ends the process itself: it
flushes the output, sets a SIGINT handler that writes the line and ends with 130, and an atexit
callback registered when this module is imported — before the libraries' own, so it runs after
theirs — flushes again and ends the process with the command's exit code (``os._exit``: Python's
module teardown, in which nothing of ocdl's is left to do, is skipped, and with it the moment
where SIGINT kills the process). ``main(argv)`` with a list (tests, other programs) only returns
the exit code and leaves the process's signal handling alone.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import signal
import sys
import threading

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


INTERRUPTED = "ocdl: interrupted\n"
_exit_code: list[int] = []  # set by main() as the entry point: the code the process ends with


def main(argv=None) -> int:
    """Run the ``ocdl`` command line ``argv`` (default: ``sys.argv[1:]``) and return its exit code;
    as the process's entry point (``argv`` None) also guard the process's end (module docstring)."""
    if argv is not None:
        return _run(argv)
    try:
        try:
            code = _run(None)
        except SystemExit as e:  # argparse: --help (0), a usage error (2)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else _message(e.code))
    except KeyboardInterrupt:
        code = _interrupted()
    return _end_process(code)


def _run(argv) -> int:
    try:
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            return int(args.func(args) or 0)
        except OcdlError as e:
            sys.stderr.write(f"ocdl: error: {e}\n")
            sys.stderr.flush()
            return 2
        except BrokenPipeError:  # the reader of stdout went away (``ocdl tableau --list | head -1``)
            _drop_stdout()
            return 1
    except KeyboardInterrupt:
        return _interrupted()


def _drop_stdout() -> None:
    """Send what is still buffered for a closed stdout to /dev/null (Python would report the
    broken pipe again at exit)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (tests capture it)
        pass


def _message(text) -> int:
    sys.stderr.write(f"{text}\n")
    return 1


def _interrupted() -> int:
    """Write 'ocdl: interrupted' once (a further Ctrl-C while it is written does not stop it)."""
    for _ in range(3):
        try:
            sys.stderr.flush()
            os.write(2, INTERRUPTED.encode())
            break
        except KeyboardInterrupt:
            continue
        except (OSError, ValueError):  # stderr closed
            break
    return 130


def _late_sigint(signum, frame):
    """SIGINT once the command has ended: the line, then the process ends with 130 at once."""
    try:
        os.write(2, INTERRUPTED.encode())
    finally:
        os._exit(130)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError, RuntimeError):  # a closed pipe, a closed stream, re-entry
            pass


def _end_process(code: int) -> int:
    """From here on a Ctrl-C ends the process with 130 (:func:`_late_sigint`); flush the output
    and leave the exit code for :func:`_at_exit`."""
    while True:
        try:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, _late_sigint)
            break
        except KeyboardInterrupt:  # came before the handler was in place
            code = _interrupted()
    _exit_code[:] = [code]
    _flush()
    return code


def _at_exit() -> None:
    """Registered at import, before any library's callback, so run after all of theirs: the end of
    an ``ocdl`` process, with the command's exit code (:func:`main` as the entry point only)."""
    if _exit_code:
        _flush()
        os._exit(_exit_code[0])


atexit.register(_at_exit)


if __name__ == "__main__":
    raise SystemExit(main())

"""Ctrl-C handling: a request to stop (:class:`StopOnSigint`), a held-back Ctrl-C
(:class:`DeferSigint`) and a Ctrl-C that compiled code cannot turn into another error
(:class:`SigintWins`).

:class:`StopOnSigint`, for solvers that run inside compiled code (IPOPT, CasADi): inside
``with StopOnSigint() as stop:`` a SIGINT sets ``stop.requested`` instead of raising
KeyboardInterrupt; the solver checks the flag between iterations and returns its current iterate,
so the run directory is written as usual and marked interrupted. Without it, CasADi turns the signal
into an exception inside whichever function is being evaluated, and the solve ends as a failure.
Outside the main thread (where signal handlers cannot be set) it does nothing.
"""

from __future__ import annotations

import signal
import threading


class _SigintBlock:
    """A context in which ``self._handler`` handles SIGINT (main thread only: elsewhere no handler
    can be set, and signals go to the main thread anyway); :meth:`_restore` puts the previous one
    back."""

    _previous = None
    _active = False

    def _handler(self, signum, frame):
        raise NotImplementedError

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            if self._previous is None:  # a handler not installed from Python: Python's own is the best guess
                self._previous = signal.default_int_handler
            self._active = True
        return self

    def _restore(self):
        """Reinstall the previous handler and return it (None if the block installed nothing)."""
        if not self._active:
            return None
        self._active = False
        previous, self._previous = self._previous, None
        signal.signal(signal.SIGINT, previous)
        return previous


class StopOnSigint(_SigintBlock):
    def __init__(self):
        self.requested = False

    def _handler(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        self._restore()
        return False


class DeferSigint(_SigintBlock):
    """Hold a Ctrl-C back for the length of the block (the commit of an accepted step, the last
    rename of a snapshot), so that the block runs whole or not at all.

    A SIGINT inside the block is remembered (``pending``); at the end of the block the previous
    handler gets it (Python's default raises KeyboardInterrupt there), or, with
    ``deliver=False``, it is only recorded for the caller to act on. Outside the main thread it
    does nothing (no handler can be set there; signals go to the main thread anyway).
    """

    def __init__(self, deliver: bool = True):
        self.deliver = deliver
        self.pending = False

    def _handler(self, signum, frame):
        self.pending = True

    def __exit__(self, exc_type, exc, tb):
        previous = self._restore()
        if previous is None:
            return False
        if self.pending and self.deliver and exc_type is None:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt
        return False


class SigintWins(_SigintBlock):
    """A Ctrl-C inside the block ends it as KeyboardInterrupt, whatever compiled code makes of it.

    Compiled code that calls back into Python (matplotlib's Agg renderer reads a bounding box
    through ``Bbox.__array__``) can catch the KeyboardInterrupt raised there and report its own
    error instead ("ValueError: Invalid bounding box"). Inside the block a SIGINT goes to the
    previous handler as usual; if that raised KeyboardInterrupt, any other exception leaving the
    block, or none at all, is replaced by KeyboardInterrupt. Outside the main thread it does
    nothing.
    """

    def __init__(self):
        self.raised = False

    def _handler(self, signum, frame):
        previous = self._previous
        try:
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.raised = True
            raise

    def __exit__(self, exc_type, exc, tb):
        if self._restore() is None:
            return False
        if self.raised and not (exc_type is not None and issubclass(exc_type, KeyboardInterrupt)):
            raise KeyboardInterrupt from None
        return False

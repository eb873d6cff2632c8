"""Ctrl-C as a request to stop, for solvers that run inside compiled code (IPOPT, CasADi).

Inside ``with StopOnSigint() as stop:`` a SIGINT sets ``stop.requested`` instead of raising
KeyboardInterrupt; the solver checks the flag between iterations and returns its current iterate,
so the run directory is written as usual and marked interrupted. Without it, CasADi turns the signal
into an exception inside whichever function is being evaluated, and the solve ends as a failure.
Outside the main thread (where signal handlers cannot be set) it does nothing.
"""

from __future__ import annotations

import signal
import threading


class StopOnSigint:
    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

"""Ctrl-C at any moment of an ``ocdl`` process ends it with one line 'ocdl: interrupted' and exit
130 — also after the command, while the interpreter shuts down (joining a library's threads,
running atexit callbacks), where Python would print 'Exception ignored …' with a traceback and
exit 0, or die by the signal (−2) (issue 19). The processes are real ones (``ocdl.cli.main()`` as
the entry point), with SIGINT's default action restored in the child (a background job inherits
it ignored)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ocdl import cli

# A process as the ocdl script runs it, plus what a library may leave for the shutdown: a
# non-daemon thread still running ("thread") or a slow atexit callback registered after ocdl's
# import ("atexit"), each 1.5 s; "MAIN" on stdout once the command is about to start.
SCRIPT = textwrap.dedent("""
    import sys, threading, time, atexit
    mode = sys.argv[1]
    import ocdl.cli
    if mode == "atexit":
        atexit.register(time.sleep, 1.5)
    sys.argv = ["ocdl", "tableau", "--list"]
    print("MAIN", flush=True)
    if mode == "thread":
        threading.Thread(target=time.sleep, args=(1.5,)).start()
    raise SystemExit(ocdl.cli.main())
""")


def _start(mode):
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.stdout.readline() == "MAIN\n"
    return p


def _listing_done(p, timeout=60.0):
    """Read stdout until the tableau listing is complete (the command has returned)."""
    lines = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = p.stdout.readline()
        lines.append(line)
        if "rk38" in line or not line:
            return lines
    raise AssertionError("no listing")


@pytest.mark.parametrize("mode", ["thread", "atexit"])
def test_sigint_during_shutdown(mode):
    p = _start(mode)
    _listing_done(p)
    time.sleep(0.5)  # the command has ended: the interpreter is joining the thread / in the atexit callback
    assert p.poll() is None
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    assert err == "ocdl: interrupted\n", err


def test_no_sigint_exit_code_and_output_kept():
    p = _start("thread")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and err == "" and "rk38" in out


def test_sigint_at_seeded_random_moments():
    """SIGINT at 8 seeded moments over the whole life of the command after its start (importing
    the command modules, the listing, the shutdown): always 130 and the one line, or — when the
    process had already ended — its exit 0."""
    rng = random.Random(19)
    seen = {0: 0, 130: 0}
    for delay in sorted(rng.uniform(0.0, 3.0) for _ in range(8)):
        p = _start(rng.choice(["thread", "atexit"]))
        time.sleep(delay)
        ended = p.poll() is not None
        if not ended:
            p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        if ended:
            assert p.returncode == 0 and err == "", (delay, p.returncode, err)
        else:
            assert p.returncode == 130 and err.endswith("ocdl: interrupted\n"), (delay, p.returncode, err)
            assert "Traceback" not in err and "Exception ignored" not in err, err
            assert err.count("ocdl: interrupted") == 1
        seen[p.returncode] += 1
    assert seen[130] >= 4  # most moments fall inside the process's life


def test_in_process_main_leaves_signals_alone(capsys):
    before = signal.getsignal(signal.SIGINT)
    assert cli.main(["tableau", "--list"]) == 0
    assert signal.getsignal(signal.SIGINT) is before and cli._exit_code == []


def test_in_process_keyboard_interrupt_is_130(monkeypatch, capfd):
    """A Ctrl-C while the parser is built (the command modules import) is 130 with the line too."""
    monkeypatch.setattr(cli, "build_parser", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert cli.main(["tableau", "--list"]) == 130
    assert capfd.readouterr().err == "ocdl: interrupted\n"

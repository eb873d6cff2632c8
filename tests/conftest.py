import atexit
import os
import shutil
import signal
import tempfile

import numpy as np
import pytest
import torch

from ocdl import data
from ocdl.problem import DataSpec, NetworkSpec, ObjectiveSpec, Problem, init_params
from ocdl.engine.torch.network import TorchNetwork

torch.set_num_threads(1)

# The tests interrupt runs with Ctrl-C (SIGINT), in this process and in the subprocesses they start. A
# runner that starts the suite with SIGINT ignored (a background job of a non-interactive shell: Python
# then installs no KeyboardInterrupt handler, and exec'd children inherit the ignore) would make every
# such test hang or fail; restore Python's handler (children exec with SIGINT at its default).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The tanh kernel's measured choice (ocdl.tanh) is cached per machine; the suite measures into a cache of its
# own (inherited by the subprocesses it starts), so it neither reads nor writes the user's.
if "OCDL_CACHE_DIR" not in os.environ:
    os.environ["OCDL_CACHE_DIR"] = tempfile.mkdtemp(prefix="ocdl-test-cache-")
    atexit.register(shutil.rmtree, os.environ["OCDL_CACHE_DIR"], True)

ALL_REG = {"K": 1e-2, "beta": 1e-3, "W": 1e-3, "mu": 1e-3, "h": 1e-2}


def small_problem(family="rk", tableau="rk4", controls="per-layer", time_steps=None, n=40, layers=4, width=3,
                  loss="squared", mean=False, activation="tanh", reg=ALL_REG, smooth=1e-2, dataset="spiral"):
    return Problem(
        data=DataSpec(dataset, n=n),
        network=NetworkSpec(family=family, tableau=tableau, layers=layers, h=0.1 if family in ("rk", "monotone") else None,
                            controls=controls, time_steps=time_steps, width=width, activation=activation),
        objective=ObjectiveSpec(loss=loss, mean=mean, tikhonov=reg, smooth=smooth),
    )


def setup_net(problem, seed_shift=0):
    tr, te = data.make(problem.data)
    d = problem.width(tr.dim)
    net = TorchNetwork(problem, d)
    p0 = init_params(problem, d)
    if problem.time_steps != "fixed" and problem.has_skip:
        # unequal steps so that the h-gradient is tested away from the uniform grid
        rng = np.random.default_rng(1 + seed_shift)
        h = p0["h"] * (0.5 + rng.uniform(size=p0["h"].shape))
        p0["h"] = h / h.sum() * problem.T if problem.time_steps == "simplex" else h
    return net, net.to_torch(p0), net.inputs(tr.X), net.tensor(tr.c)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

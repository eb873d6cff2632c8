"""``ocdl bench epoch``: the time of one epoch of minibatch training at MNIST's size.

Synthetic data of MNIST's shape (no download): m = 60 000 training samples of dimension 784 with
pixel-like values U(0, 1) and balanced labels 0 … K−1 (K = ``--classes``, default 10), drawn from
``--seed``; a ResNet (family "resnet": Euler steps, fixed h = 1/N) of N = 20 layers at width
d = 784, the logistic (cross-entropy) loss averaged over the batch. One step is what the engine's
minibatch solvers do per iteration (:func:`ocdl.engine.torch.optim._first_order`): the batch's
columns sliced from the d×m inputs, E_𝓑 and ∇E_𝓑 by the partner adjoint (or ``--gradient
autograd``) on the batch only, one torch optimiser step (``--solver sgd`` with momentum 0.9, or
adam). The steps are those of the first epoch, in its seeded order.

Per dtype (``--dtypes float64,float32``): the median and spread of the wall time of ``--steps``
steps after one warm-up step; the epoch time is the median step × ⌈m/B⌉ — an extrapolation, said
so in the output — unless ``--full-epoch`` runs all ⌈m/B⌉ steps and reports their total; and the
peak memory of one step above what was allocated before it (the allocator events of
``torch.profiler``; on CUDA also ``torch.cuda.max_memory_allocated``). Figures only: nothing is
asserted about speed.
"""

from __future__ import annotations

import json
import statistics
import time

from ocdl.commands._args import int_at_least


def register(bsub):
    p = bsub.add_parser("epoch", help="time of one epoch of minibatch training at MNIST's size (synthetic data)")
    p.add_argument("--n", type=int_at_least(2), default=60000, help="training samples m (default 60000)")
    p.add_argument("--dim", type=int_at_least(1), default=784, help="input dimension (default 784 = 28×28)")
    p.add_argument("--width", type=int_at_least(1), help="state width d (default: --dim)")
    p.add_argument("--layers", type=int_at_least(1), default=20, help="layers N (default 20)")
    p.add_argument("--classes", type=int_at_least(2), default=10, help="classes K (default 10)")
    p.add_argument("--batch-size", type=int_at_least(1), default=128, help="samples per step B (default 128)")
    p.add_argument("--solver", default="sgd", choices=("sgd", "adam"), help="optimiser step (default sgd)")
    p.add_argument("--gradient", default="adjoint", choices=("adjoint", "autograd"),
                   help="gradient of the batch objective (default adjoint)")
    p.add_argument("--dtypes", default="float64,float32", help="comma-separated (default float64,float32)")
    p.add_argument("--steps", type=int_at_least(1), default=8,
                   help="steps timed per dtype, after one warm-up (default 8); the epoch time is extrapolated")
    p.add_argument("--full-epoch", action="store_true", help="run and time all ⌈m/B⌉ steps of the epoch instead")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:i")
    p.add_argument("--threads", type=int_at_least(0), default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the data, the initial parameters and the "
                                                                  "shuffling (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _problem(a, X, c, dtype):
    from ocdl.problem import Problem

    return Problem.from_arrays(
        X, c, network={"family": "resnet", "layers": a.layers, "width": a.width or a.dim},
        objective={"loss": "logistic", "mean": True}, init={"seed": a.seed},
        solver={"backend": "torch", "name": a.solver, "iterations": 1,
                "options": {"batch_size": a.batch_size, "gradient": a.gradient, "seed": a.seed}},
        dtype=dtype, device=a.device)


def synthetic(m: int, dim: int, classes: int, seed: int):
    """(X (m, dim) U(0, 1), labels 0 … K−1, each class ⌊m/K⌋ or ⌈m/K⌉ times, shuffled) from ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 1.0, size=(m, dim))
    c = rng.permutation(np.arange(m) % classes).astype(np.float64)
    return X, c


def measure(a, X, c, dtype: str) -> dict:
    import torch

    from ocdl import api
    from ocdl.benchmarks.gradient import _peak_bytes
    from ocdl.engine.torch import optim
    from ocdl.engine.torch.network import TorchNetwork
    from ocdl.problem import dims

    problem = _problem(a, X, c, dtype)
    engine, (train, test), params0 = api.prepare(problem)
    opts = engine.check_options(problem)
    d, K = dims(params0)
    net = TorchNetwork(problem, d, classes=K)
    base = net.to_torch(params0)
    Y0, targets = net.inputs(train.X), net.targets(train.c)
    obj = optim.Objective(net, base, problem.trainable(), Y0, targets, Y0[:, :1], targets[..., :1])
    obj.gradient = a.gradient
    batches = optim.Batches(train.n, a.batch_size, a.seed, Y0.device)
    theta = obj.flat(base)
    opt = optim._torch_optimiser(a.solver, theta, opts, {})
    cuda = Y0.device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    state = {"theta": theta, "k": 0}

    def step():
        _, g = obj.batch_value_grad(state["theta"], batches.indices(state["k"]))
        state["theta"], _, why = optim._gradient_step(opt, lambda t: t, state["theta"], g)
        state["k"] += 1

    step()  # warm-up
    sync()
    n_steps = batches.per_epoch - 1 if a.full_epoch else a.steps
    times = []
    t_all = time.perf_counter()
    for _ in range(n_steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    peak = _peak_bytes(step, cuda)
    row = {"dtype": dtype, "steps_timed": n_steps, "step_s": statistics.median(times),
           "step_min_s": min(times), "step_max_s": max(times), "steps_per_epoch": batches.per_epoch,
           "step_peak_bytes": peak, "parameters": int(theta.numel()),
           "data_bytes": int(Y0.numel() * Y0.element_size())}
    if a.full_epoch:  # the warm-up step belongs to the epoch too: its time is counted as the median
        row["epoch_s"], row["epoch_extrapolated"] = total + row["step_s"], False
    else:
        row["epoch_s"], row["epoch_extrapolated"] = row["step_s"] * batches.per_epoch, True
    if cuda:
        row["step_cuda_peak_bytes"] = torch.cuda.max_memory_allocated() - before
    return row


def run(a) -> int:
    import torch

    from ocdl.engine.torch.network import resolve_device
    from ocdl.errors import OcdlError

    dtypes = [s.strip() for s in a.dtypes.split(",") if s.strip()]
    bad = [s for s in dtypes if s not in ("float64", "float32")]
    if not dtypes or bad:
        raise OcdlError(f"--dtypes: expected float64 and/or float32, got {a.dtypes!r}")
    if a.width is not None and a.width < a.dim:
        raise OcdlError(f"--width {a.width} is smaller than --dim {a.dim}")
    if a.classes > a.n:
        raise OcdlError(f"--classes {a.classes}: more classes than the {a.n} samples")
    resolve_device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    X, c = synthetic(a.n, a.dim, a.classes, a.seed)
    rows = [measure(a, X, c, dt) for dt in dtypes]
    out = {"problem": {"m": a.n, "dim": a.dim, "width": a.width or a.dim, "N": a.layers, "family": "resnet",
                       "classes": a.classes, "batch_size": a.batch_size, "solver": a.solver, "gradient": a.gradient,
                       "device": a.device, "threads": torch.get_num_threads()}, "rows": rows}
    if a.json:
        print(json.dumps(out))
        return 0
    P = out["problem"]
    print(f"ocdl bench epoch: synthetic data of MNIST's shape, m = {P['m']}, input {P['dim']}, width {P['width']}, "
          f"ResNet N = {P['N']}, K = {P['classes']}, batch {P['batch_size']} ({rows[0]['steps_per_epoch']} steps an "
          f"epoch), {P['solver']}, {P['gradient']} gradient, {P['device']}, {P['threads']} thread(s), "
          f"{rows[0]['parameters']} parameters")
    for r in rows:
        how = (f"extrapolated: median step × {r['steps_per_epoch']} steps, from {r['steps_timed']} timed steps"
               if r["epoch_extrapolated"] else f"all {r['steps_per_epoch']} steps run")
        cuda = f", CUDA peak {r['step_cuda_peak_bytes'] / 2**20:.1f} MiB" if "step_cuda_peak_bytes" in r else ""
        print(f"{r['dtype']}: epoch {r['epoch_s']:.1f} s ({how}); step median {r['step_s'] * 1e3:.1f} ms "
              f"(min {r['step_min_s'] * 1e3:.1f}, max {r['step_max_s'] * 1e3:.1f}); peak memory of a step "
              f"{r['step_peak_bytes'] / 2**20:.1f} MiB above the data ({r['data_bytes'] / 2**20:.0f} MiB){cuda}")
    return 0

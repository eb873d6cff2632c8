"""``ocdl bench gradient``: forward sweep vs autograd vs hand-written partner adjoint.

Times are medians over ``--repeats`` rounds (after a warm-up), measured in one process; the
computations are interleaved round by round (in an order rotated each round) so that load from
other processes hits them alike, and ratios are taken between medians of the same run. Wall time and process CPU time are both
reported (with one thread, CPU time is the less noisy figure on a shared machine). Memory, two
figures: the memory *retained between the forward and the backward sweep* — for autograd the bytes
of the tensors it saves (counted with ``torch.autograd.graph.saved_tensors_hooks``, unique
storages), for the adjoint the stored layer states y^[0..N] — and the *peak* allocated during one
gradient evaluation above what was allocated before it (inputs and parameters excluded; the
allocator events of ``torch.profiler`` with ``profile_memory``, on the CPU or the CUDA device;
on CUDA also ``torch.cuda.max_memory_allocated`` as a cross-check). A scaling table over N shows
the O(N·m·d) growth of both. Autograd is timed twice: through the engine's forward sweep (on the
CPU NumPy's tanh, wrapped in an autograd Function, so that it differentiates the same rounded map
as the adjoint) and through torch.tanh, as plain PyTorch code runs it; the adjoint's ratio is
taken to the faster of the two. "adjoint, given y^[j]" is the backward sweep alone when the layer
states of a forward sweep at the same parameters are at hand (the optimisers' line search leaves
them), which is what one optimiser iteration pays for its gradient. With ``--train-iterations K``
it also times K gd-armijo iterations.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

from ocdl import data as data_mod
from ocdl.benchmarks import tableau_file
from ocdl.commands._args import int_at_least
from ocdl.problem import DataSpec, NetworkSpec, Problem, SolverSpec, init_params


def register(bsub):
    p = bsub.add_parser("gradient", help="forward / autograd / partner-adjoint timing and memory")
    p.add_argument("--data", default="spiral", choices=tuple(data_mod.GENERATORS),
                   help="generated data set (default spiral)")
    p.add_argument("--n", type=int_at_least(2), default=1000, help="samples m (default 1000)")
    p.add_argument("--layers", type=int_at_least(1), default=15,
                   help="layers N (default 15; the memory table also runs 2N and 4N)")
    tab = p.add_mutually_exclusive_group()
    tab.add_argument("--tableau", default="rk4", help="registry tableau (default rk4; see `ocdl tableau --list`)")
    tab.add_argument("--tableau-file", dest="tableau", type=tableau_file, metavar="FILE",
                     help="a user tableau (TOML/JSON with A, b, optional c and name) instead")
    p.add_argument("--controls", default="per-layer", choices=("per-layer", "per-stage"),
                   help="one (K, β) per layer (default) or per stage")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:i")
    p.add_argument("--repeats", type=int_at_least(1), default=31, help="timing rounds; medians are reported (default 31)")
    p.add_argument("--threads", type=int_at_least(0), default=0, help="torch CPU threads (0: auto)")
    p.add_argument("--train-iterations", type=int_at_least(0), default=10000, help="time this many gd-armijo iterations (0: skip)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _interleaved_medians(fs: dict, repeats, sync):
    """{name: (median wall s, median CPU s)}, timing the functions round-robin, the order rotated
    by one each round (so that no function always follows the same one, e.g. autograd's cache-filling
    sweep)."""
    for f in fs.values():
        f()
        sync()
    wall = {k: [] for k in fs}
    cpu = {k: [] for k in fs}
    items = list(fs.items())
    for r in range(repeats):
        for k, f in items[r % len(items):] + items[:r % len(items)]:
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            sync()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fs}


def _saved_bytes(f):
    import torch
    seen = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        except Exception:
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        f()
    return sum(seen.values())


@contextlib.contextmanager
def _without_profiler_banner():
    """Drop the 'profiler_start' / 'profiler_stop' lines that the profiler's C++ side writes to the
    process's stderr at every use; anything else written there in the meantime is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines(keepends=True):
                if "ActivityProfilerHandler" not in line:
                    sys.stderr.write(line)


def _peak_bytes(f, cuda: bool):
    """Peak of the bytes allocated during f() above what was allocated before it, on the CPU or
    the CUDA device: the running sum, in the order they happened, of the allocations and frees
    that ``torch.profiler`` records (profile_memory)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with _without_profiler_banner():
        with profile(activities=acts, profile_memory=True) as prof:
            f()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as fh:
            events = json.load(fh)["traceEvents"]
    device_type = 1 if cuda else 0  # the profiler's c10 device types: CPU 0, CUDA 1
    run = peak = 0
    for e in events:
        if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == device_type:
            run += e["args"]["Bytes"]
            peak = max(peak, run)
    return peak


def measure(problem, repeats=31, device="cpu"):
    import torch
    from ocdl.engine.torch.adjoint import grad_adjoint
    from ocdl.engine.torch.network import TorchNetwork

    tr, _ = data_mod.make(problem.data)
    d = problem.width(tr.dim)
    net = TorchNetwork(problem, d, device=device)
    plain = TorchNetwork(problem, d, device=device, numpy_tanh=False)  # autograd as plain PyTorch runs it
    prm = net.to_torch(init_params(problem, d))
    Y0, c = net.inputs(tr.X), net.tensor(tr.c)
    cuda = net.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def fwd():  # as the optimisers' line search evaluates E
        with torch.inference_mode():
            net.objective(prm, Y0, c)

    with torch.no_grad():
        _, states0 = net.forward(prm, Y0, keep_states=True)
    med = _interleaved_medians({
        "forward": fwd,
        "autograd": lambda: net.grad_autograd(prm, Y0, c),
        "autograd_torch": lambda: plain.grad_autograd(prm, Y0, c),
        "adjoint": lambda: grad_adjoint(net, prm, Y0, c),
        "adjoint_backward": lambda: grad_adjoint(net, prm, Y0, c, states=states0),
    }, repeats, sync)
    row = {}
    for k, (w, cp) in med.items():
        row[f"{k}_s"] = w
        row[f"{k}_cpu_s"] = cp
    # the adjoint is compared with the faster of the two autograd variants
    best, best_cpu = min(row["autograd_s"], row["autograd_torch_s"]), min(row["autograd_cpu_s"], row["autograd_torch_cpu_s"])
    row["adjoint_over_forward"] = row["adjoint_s"] / row["forward_s"]
    row["autograd_over_forward"] = row["autograd_s"] / row["forward_s"]
    row["adjoint_over_autograd"] = row["adjoint_s"] / best
    row["adjoint_over_forward_cpu"] = row["adjoint_cpu_s"] / row["forward_cpu_s"]
    row["adjoint_over_autograd_cpu"] = row["adjoint_cpu_s"] / best_cpu
    row["adjoint_backward_over_autograd"] = row["adjoint_backward_s"] / best
    leaves = {k: v.detach().clone().requires_grad_(k in problem.trainable()) for k, v in prm.items()}
    row["autograd_saved_bytes"] = _saved_bytes(lambda: net.objective(leaves, Y0, c))
    row["autograd_torch_saved_bytes"] = _saved_bytes(lambda: plain.objective(leaves, Y0, c))
    with torch.no_grad():
        _, states = net.forward(prm, Y0, keep_states=True)
    row["adjoint_states_bytes"] = sum(s.numel() * s.element_size() for s in states)
    for key, f in (("forward", fwd), ("autograd", lambda: net.grad_autograd(prm, Y0, c)),
                   ("autograd_torch", lambda: plain.grad_autograd(prm, Y0, c)),
                   ("adjoint", lambda: grad_adjoint(net, prm, Y0, c)),
                   ("adjoint_backward", lambda: grad_adjoint(net, prm, Y0, c, states=states0))):
        row[f"{key}_peak_bytes"] = _peak_bytes(f, cuda)
    if cuda:
        for key, f in (("forward", fwd), ("autograd", lambda: net.grad_autograd(prm, Y0, c)),
                       ("adjoint", lambda: grad_adjoint(net, prm, Y0, c))):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            f()
            sync()
            row[f"{key}_cuda_peak_bytes"] = torch.cuda.max_memory_allocated() - base
    return row


def time_training(problem, iterations):
    from ocdl.training import train

    p = problem.replace(solver=SolverSpec(backend="torch", name="gd-armijo", iterations=iterations,
                                          options={"progress_every": max(1, iterations // 10)}))
    t0, c0 = time.perf_counter(), time.process_time()
    res, metrics = train(p, out=None, quiet=True, figures=False)
    return {"iterations": iterations, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "objective": metrics["objective"],
            "train_accuracy": metrics["train_accuracy"], "function_evaluations": res.metrics["function_evaluations"],
            "gradient_evaluations": res.metrics["gradient_evaluations"]}


def run(a) -> int:
    from ocdl.engine.torch.network import configure_threads

    def problem(N):
        return Problem(
            data=DataSpec(a.data, n=a.n),
            network=NetworkSpec(family="rk", tableau=a.tableau, layers=N, h=0.1, controls=a.controls),
            device=a.device,
        )

    threads = configure_threads(a.n, 2, a.threads)
    main = measure(problem(a.layers), a.repeats, a.device)
    scaling = []
    for N in (a.layers, 2 * a.layers, 4 * a.layers):
        r = measure(problem(N), max(5, a.repeats // 3), a.device)
        scaling.append({"N": N, "autograd_saved_bytes": r["autograd_saved_bytes"],
                        "adjoint_states_bytes": r["adjoint_states_bytes"],
                        "autograd_peak_bytes": r["autograd_peak_bytes"], "adjoint_peak_bytes": r["adjoint_peak_bytes"],
                        "adjoint_over_forward": r["adjoint_over_forward"]})
    out = {"problem": {"data": a.data, "m": a.n, "N": a.layers, "tableau": a.tableau, "controls": a.controls,
                       "device": a.device, "dtype": "float64", "threads": threads, "repeats": a.repeats},
           "gradient": main, "memory_scaling": scaling}
    if a.train_iterations > 0:
        out["training"] = time_training(problem(a.layers), a.train_iterations)
    if a.json:
        print(json.dumps(out))
        return 0
    P_ = out["problem"]
    print(f"ocdl bench gradient: {P_['data']}, m = {P_['m']}, N = {P_['N']}, {P_['tableau']}, {P_['controls']}, "
          f"float64, {P_['device']}, {threads} thread(s), median of {a.repeats}")
    print(f"{'':<20}{'wall':>11}{'× fwd':>8}{'CPU':>11}{'× fwd':>8}{'retained memory':>17}{'peak memory':>14}")
    g = main
    mem = {"forward": None, "autograd": g["autograd_saved_bytes"], "autograd_torch": g["autograd_torch_saved_bytes"],
           "adjoint": g["adjoint_states_bytes"], "adjoint_backward": g["adjoint_states_bytes"]}
    for k, label in (("forward", "forward"), ("autograd", "autograd gradient"), ("autograd_torch", "  with torch.tanh"),
                     ("adjoint", "adjoint gradient"), ("adjoint_backward", "adjoint, given y^[j]")):
        m_ = "-" if mem[k] is None else f"{mem[k] / 1024:.1f}KiB"
        print(f"{label:<20}{g[k + '_s'] * 1e3:>9.3f}ms{g[k + '_s'] / g['forward_s']:>8.2f}"
              f"{g[k + '_cpu_s'] * 1e3:>9.3f}ms{g[k + '_cpu_s'] / g['forward_cpu_s']:>8.2f}{m_:>17}"
              f"{g[k + '_peak_bytes'] / 1024:>11.1f}KiB")
    print(f"adjoint / autograd (the faster of the two) = {g['adjoint_over_autograd']:.2f} (wall), "
          f"{g['adjoint_over_autograd_cpu']:.2f} (CPU); "
          f"backward sweep given the layer states (as in the line search) / autograd = "
          f"{g['adjoint_backward_over_autograd']:.2f}")
    for key in ("forward", "autograd", "adjoint"):
        if f"{key}_cuda_peak_bytes" in g:
            print(f"CUDA peak {key}: {g[f'{key}_cuda_peak_bytes'] / 1024:.1f} KiB")
    print("memory retained between sweeps vs N (KiB): " + ", ".join(
        f"N={r['N']}: autograd {r['autograd_saved_bytes'] / 1024:.0f}, adjoint {r['adjoint_states_bytes'] / 1024:.0f}"
        for r in scaling))
    print("peak memory vs N (KiB): " + ", ".join(
        f"N={r['N']}: autograd {r['autograd_peak_bytes'] / 1024:.0f}, adjoint {r['adjoint_peak_bytes'] / 1024:.0f}"
        for r in scaling))
    if "training" in out:
        t = out["training"]
        print(f"gd-armijo: {t['iterations']} iterations in {t['wall_s']:.1f} s wall, {t['cpu_s']:.1f} s CPU "
              f"({t['wall_s'] / t['iterations'] * 1e3:.2f} ms/iteration; {t['function_evaluations']} objective and "
              f"{t['gradient_evaluations']} gradient evaluations); final E = {t['objective']:.6g}, "
              f"train accuracy {t['train_accuracy']:.3f}")
    return 0

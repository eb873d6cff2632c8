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
CPU the process's tanh kernel, :mod:`ocdl.tanh`: where it is not torch's, an autograd Function, so
that it differentiates the same rounded map as the adjoint) and through torch.tanh, as plain PyTorch code runs it; the adjoint's ratio is
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
from ocdl.metrics import rel_diff


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
    p.add_argument("--peers", action="store_true",
                   help="compare with the installed peers (torchdiffeq, JAX, diffrax, a plain PyTorch loop) at --sizes")
    p.add_argument("--sizes", type=_sizes, default=_sizes(PEER_SIZES), metavar="m:N,…",
                   help=f"sizes of --peers (default {PEER_SIZES}; h = 1.5/N)")
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
    plain = TorchNetwork(problem, d, device=device, chosen_tanh=False)  # autograd as plain PyTorch runs it
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

    if a.peers:
        return run_peers(a)
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


# ---------------------------------------------------------------------- --peers
def _sizes(text: str):
    """``m:N,m:N,…`` → [(m, N), …]."""
    import argparse

    out = []
    for part in text.split(","):
        try:
            m, N = (int(x) for x in part.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--sizes: expected m:N,m:N,… (e.g. 1000:15,1000:60), got {part!r}") from None
        if m < 2 or N < 1:
            raise argparse.ArgumentTypeError(f"--sizes: m ≥ 2 and N ≥ 1, got {part!r}")
        out.append((m, N))
    return out


PEER_SIZES = "1000:15,10000:15,100000:15,1000:60,1000:240"


def _tracemalloc_peak(f) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        f()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def peers_size(m: int, N: int, repeats: int, device: str = "cpu"):
    """The rows of one size (m, N): each contender's median time, ratio to ocdl's fastest
    gradient, relative gradient difference to ocdl's (the torch engine's partner adjoint), and
    peak memory; and the contenders skipped (name, why)."""
    import torch

    from ocdl.benchmarks import peers as P
    from ocdl.engine.torch.adjoint import grad_adjoint
    from ocdl.engine.torch.network import TorchNetwork

    h = 1.5 / N
    keys = ("K", "beta", "W", "mu")

    def problem(tab):
        return Problem(data=DataSpec("spiral", n=m), network=NetworkSpec(family="rk", tableau=tab, layers=N, h=h),
                       device=device)

    prob = problem("rk4")
    tr, _ = data_mod.make(prob.data)
    d = prob.width(tr.dim)
    net = TorchNetwork(prob, d, device=device)
    prm = net.to_torch(init_params(prob, d))
    Y0, c = net.inputs(tr.X), net.targets(tr.c)
    cuda = net.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    ref = P.flat_grad([v.cpu() for v in grad_adjoint(net, prm, Y0, c)[1].values()])
    grads, fns, fwds, mem, skipped = {}, {}, {}, {}, []

    def tflat(g):
        return P.flat_grad([g[k].detach().cpu() for k in keys]) if isinstance(g, dict) else \
            P.flat_grad([x.detach().cpu() for x in g])

    def fwd_torch():
        with torch.inference_mode():
            net.objective(prm, Y0, c)

    fns["ocdl-torch"] = lambda: grad_adjoint(net, prm, Y0, c)
    fns["ocdl-torch-autograd"] = lambda: net.grad_autograd(prm, Y0, c)
    fwds["ocdl-torch"] = fwd_torch
    grads["ocdl-torch"] = ref
    grads["ocdl-torch-autograd"] = tflat(net.grad_autograd(prm, Y0, c)[1])
    if P.installed("numba") and not cuda:
        from ocdl.engine.native.compiled import Compiled

        comp = Compiled(net)
        fns["ocdl-adjoint"] = lambda: comp.value_grad(prm, Y0, c)
        fns["ocdl-native-autograd"] = lambda: comp.value_grad(prm, Y0, c, gradient="autograd")
        fwds["ocdl-native"] = lambda: comp.objective(prm, Y0, c)
        grads["ocdl-adjoint"] = tflat(comp.value_grad(prm, Y0, c)[1])
        grads["ocdl-native-autograd"] = tflat(comp.value_grad(prm, Y0, c, gradient="autograd")[1])
        for k in ("ocdl-adjoint", "ocdl-native-autograd"):
            mem[k] = _tracemalloc_peak(fns[k]) / 1024
        # the native engine's objective on the flat θ (what its optimisers call: one compiled call)
        from ocdl.engine.native.objective import CompiledObjective

        for name, how, keep in (("ocdl-native-flat", "adjoint", None), ("ocdl-native-flat-lean", "adjoint", False),
                                ("ocdl-native-flat-autograd", "autograd", None)):
            obj = CompiledObjective(net, prm, prob.trainable(), Y0, c, Y0, c, gradient=how, keep_stages=keep)
            if obj.layout() is None:
                continue
            theta = obj.flat(prm)
            fns[name] = lambda obj=obj, theta=theta: obj.value_grad(theta)
            grads[name] = tflat(obj.unflat(obj.value_grad(theta)[1]))
            if name == "ocdl-native-flat":  # an objective of its own: value() keeps the states for a value_grad at the same θ
                fobj = CompiledObjective(net, prm, prob.trainable(), Y0, c, Y0, c, gradient=how)
                fobj.layout()
                fwds["ocdl-native-flat"] = lambda fobj=fobj, theta=theta: fobj.value(theta)
            work = sum(v.nbytes for v in obj.layout()[2].values())  # its preallocated arrays, and what a call allocates
            mem[name] = (work + _tracemalloc_peak(fns[name])) / 1024
    else:
        skipped.append(("ocdl-adjoint (native)", "numba not installed" if not cuda else "CPU only"))
    fns["torch-loop"] = lambda: P.torch_loop(prm, Y0, c, h)
    grads["torch-loop"] = tflat(P.torch_loop(prm, Y0, c, h)[1])
    if P.installed("torchdiffeq"):
        p38 = problem("rk38")
        net38 = TorchNetwork(p38, d, device=device)
        ref38 = P.flat_grad([v.cpu() for v in grad_adjoint(net38, prm, Y0, c)[1].values()])
        for name, adj in (("torchdiffeq", False), ("torchdiffeq-adjoint", True)):
            fns[name] = (lambda adj=adj: P.torchdiffeq_grad(prm, Y0, c, h, adj))
            grads[name] = (tflat(P.torchdiffeq_grad(prm, Y0, c, h, adj)[1]), ref38)
    else:
        skipped += [("torchdiffeq", "not installed"), ("torchdiffeq-adjoint", "not installed")]
    jax_args = None
    for name, make in (("jax", P.jax_value_and_grad), ("diffrax", P.diffrax_value_and_grad)):
        if not P.installed("jax") or (name == "diffrax" and not P.installed("diffrax")):
            skipped.append((name, "not installed"))
            continue
        import jax

        vg, E = make(N, h, device)
        jax_args = ((jax.numpy.asarray(prm["K"].cpu().numpy()), jax.numpy.asarray(prm["beta"].cpu().numpy()),
                     jax.numpy.asarray(prm["W"].cpu().numpy()), jax.numpy.asarray(prm["mu"].cpu().numpy())),
                    jax.numpy.asarray(Y0.cpu().numpy().T), jax.numpy.asarray(c.cpu().numpy()))
        fns[name] = (lambda vg=vg: jax.block_until_ready(vg(*jax_args)))
        if name == "jax":
            fwds["jax"] = (lambda E=E: jax.block_until_ready(E(*jax_args)))
        grads[name] = P.flat_grad(vg(*jax_args)[1])
        mem[name] = P.jax_memory_kib(vg, *jax_args)
    for k in ("ocdl-torch", "ocdl-torch-autograd", "torch-loop", "torchdiffeq", "torchdiffeq-adjoint"):
        if k in fns:
            mem[k] = _peak_bytes(fns[k], cuda) / 1024
    fwds["torch-loop"] = lambda: _no_grad(lambda: P.torch_loop_forward(prm, Y0, c, h))
    timed = {**{("gradient", k): f for k, f in fns.items()}, **{("forward", k): f for k, f in fwds.items()}}
    med = _interleaved_medians(timed, P.default_repeats(repeats, m, N), sync)
    grad_rows = {k: med[("gradient", k)][0] for k in fns}
    ocdl_best = min(v for k, v in grad_rows.items() if k.startswith("ocdl-"))
    best_name = min((v, k) for k, v in grad_rows.items() if k.startswith("ocdl-"))[1]
    fwd_rows = {k: med[("forward", k)][0] for k in fwds}
    fwd_best = min(v for k, v in fwd_rows.items() if k.startswith("ocdl-"))
    rows = [{"contender": "ocdl", "m": m, "N": N, "kind": "gradient", "median_s": ocdl_best, "ratio_to_ocdl": 1.0,
             "rel_diff": rel_diff(grads[best_name], ref), "peak_kib": mem.get(best_name), "path": best_name}]
    for k, t in grad_rows.items():
        g = grads[k]
        rd = rel_diff(g[0], g[1]) if isinstance(g, tuple) else rel_diff(g, ref)
        rows.append({"contender": k, "m": m, "N": N, "kind": "gradient", "median_s": t, "ratio_to_ocdl": t / ocdl_best,
                     "rel_diff": rd, "peak_kib": mem.get(k)})
    fbest = min((v, k) for k, v in fwd_rows.items() if k.startswith("ocdl-"))[1]
    rows.append({"contender": "ocdl", "m": m, "N": N, "kind": "forward", "median_s": fwd_best, "ratio_to_ocdl": 1.0,
                 "rel_diff": None, "peak_kib": None, "path": fbest})
    for k, t in fwd_rows.items():
        rows.append({"contender": k, "m": m, "N": N, "kind": "forward", "median_s": t, "ratio_to_ocdl": t / fwd_best,
                     "rel_diff": None, "peak_kib": None})
    return rows, skipped


def _no_grad(f):
    import torch

    with torch.no_grad():
        return f()


def run_peers(a) -> int:
    from ocdl.engine.torch.network import configure_threads

    threads = configure_threads(1, 2, a.threads or 1)
    load0 = os.getloadavg()
    rows, skipped = [], []
    for m, N in a.sizes:
        r, s = peers_size(m, N, a.repeats, a.device)
        rows += r
        skipped += [x for x in s if x not in skipped]
    load1 = os.getloadavg()
    out = {"rows": rows, "skipped": [{"contender": n, "why": w} for n, w in skipped],
           "problem": {"data": "spiral", "tableau": "rk4", "controls": "per-layer", "T": 1.5, "dtype": "float64",
                       "device": a.device, "threads": threads, "repeats": a.repeats},
           "load_average": {"before": load0, "after": load1}, "cpus": os.cpu_count()}
    if a.json:
        print(json.dumps(out))
        return 0
    print(f"ocdl bench gradient --peers: spiral, rk4, per-layer, h = 1.5/N, float64, {a.device}, {threads} thread(s); "
          f"interleaved medians; load average {load0[0]:.2f} before, {load1[0]:.2f} after, {os.cpu_count()} CPUs")
    print(f"{'contender':<30}{'m':>8}{'N':>5}{'kind':>10}{'median':>12}{'× ocdl':>9}{'rel. diff':>11}{'peak':>13}")
    for r in rows:
        rd = "-" if r["rel_diff"] is None else f"{r['rel_diff']:.1e}"
        pk = "-" if r["peak_kib"] is None else f"{r['peak_kib']:.0f}KiB"
        name = r["contender"] + (f" ({r['path']})" if "path" in r else "")
        print(f"{name:<30}{r['m']:>8}{r['N']:>5}{r['kind']:>10}{r['median_s'] * 1e3:>10.3f}ms{r['ratio_to_ocdl']:>9.2f}"
              f"{rd:>11}{pk:>13}")
    for n, w in skipped:
        print(f"skipped: {n} ({w})")
    print("rel. diff: max |g − g_ocdl| / max |g_ocdl| over (K, β, W, μ), g_ocdl the torch engine's partner adjoint "
          "(torchdiffeq: against ocdl's rk38, its 'rk4' being the 3/8 rule); peak: torch profiler (torch rows), "
          "tracemalloc of the arrays the native sweeps allocate (native rows), XLA's memory analysis (jax rows)")
    return 0

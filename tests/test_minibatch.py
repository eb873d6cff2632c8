"""Minibatch training in the torch engine (sgd, adam with batch_size > 0): the minibatch objective
and its gradient, the seeded shuffling, epochs and records, resume after an interruption, the
options' checks, divergence, and the chunked evaluation."""

import math

import numpy as np
import pytest
import torch

import ocdl
from ocdl import regulariser, training
from ocdl.cli import main as _main
from ocdl.engine.base import RunContext
from ocdl.engine.torch import optim
from ocdl.problem import DataSpec, NetworkSpec, ObjectiveSpec, Problem, SolverSpec

SMALL = ["--data", "spiral", "--n", "60", "--layers", "4", "--tableau", "rk4"]


def main(args) -> int:
    return _main([str(a) for a in args])


def problem(solver="sgd", iterations=20, options=None, net="rk", n=60, **sections):
    return Problem(data=DataSpec("spiral", n=n), network=NetworkSpec(family=net, tableau="rk4", layers=4),
                   solver=SolverSpec(name=solver, iterations=iterations, options=options or {}), **sections)


def objective_of(prob):
    """The engine's Objective for ``prob`` (as TorchEngine.solve builds it) and θ₀."""
    from ocdl import api
    from ocdl.engine.torch.network import TorchNetwork
    from ocdl.problem import dims

    _, (train, test), params0 = api.prepare(prob)
    d, K = dims(params0)
    net = TorchNetwork(prob, d, classes=K)
    base = net.to_torch(params0)
    obj = optim.Objective(net, base, prob.trainable(), net.inputs(train.X), net.targets(train.c),
                          net.inputs(test.X), net.targets(test.c))
    return obj, obj.flat(base)


EVAL_KEYS = ("eval_iteration", "train_objective", "train_accuracy", "test_accuracy", "test_objective")
REGULARISED = dict(objective=ObjectiveSpec(tikhonov={"K": 1e-2, "beta": 2e-2, "W": 3e-2, "mu": 4e-2, "h": 0.0},
                                           smooth=1e-2))


# ------------------------------------------------------------------ the minibatch objective
@pytest.mark.parametrize("mean", [False, True])
def test_minibatch_objective_is_the_scaled_batch_loss_plus_r_once(mean):
    """E_𝓑 = (m/b) Σ_𝓑 ℓ + R (sum loss) or (1/b) Σ_𝓑 ℓ + R (mean), by an independent autograd
    computation of that formula; the adjoint and autograd gradients agree with it to 1e-12."""
    obj_spec = ObjectiveSpec(loss="logistic", mean=mean, tikhonov=REGULARISED["objective"].tikhonov, smooth=1e-2)
    prob = problem(objective=obj_spec, net="odenet")
    obj, theta = objective_of(prob)
    idx = torch.tensor([3, 17, 5, 44, 29, 8, 51])
    m, b = obj.Y0.shape[1], len(idx)
    leaves = obj.unflat(theta.clone().requires_grad_(True))
    for k, v in leaves.items():
        leaves[k] = v.detach().clone().requires_grad_(k in prob.trainable())
    yN = obj.net.forward(leaves, obj.Y0[:, idx])
    from ocdl import loss as loss_mod

    z = obj.net.logits(leaves, yN)
    L = loss_mod.pointwise(prob.objective.loss, z, obj.c[..., idx], obj.net.xp).sum()
    E_ref = (L / b if mean else L * (m / b)) + regulariser.value(prob, leaves)
    g_ref = torch.autograd.grad(E_ref, [leaves[k] for k in prob.trainable()])
    g_ref = torch.cat([g.reshape(-1) for g in g_ref])
    for gradient in ("adjoint", "autograd"):
        obj.gradient = gradient
        E, g = obj.batch_value_grad(theta, idx)
        assert abs(E - float(E_ref.detach())) <= 1e-12 * abs(float(E_ref.detach())), gradient
        assert float(torch.linalg.vector_norm(g - g_ref)) <= 1e-12 * float(torch.linalg.vector_norm(g_ref)), gradient


@pytest.mark.parametrize("mean", [False, True])
def test_an_epoch_of_minibatch_gradients_averages_to_the_full_gradient(mean):
    """Each sample lies in one batch of an epoch: with ⌈m/B⌉ batches of equal size b the average of
    E_𝓑 and ∇E_𝓑 over the epoch is E and ∇E (the estimate is unbiased), to rounding."""
    prob = problem(objective=ObjectiveSpec(mean=mean, tikhonov=REGULARISED["objective"].tikhonov, smooth=1e-2))
    obj, theta = objective_of(prob)
    batches = optim.Batches(60, 12, seed=3, device=obj.Y0.device)
    assert batches.per_epoch == 5
    Es, gs = zip(*(obj.batch_value_grad(theta, batches.indices(k)) for k in range(5)))
    E, g = obj.value_grad(theta)
    assert abs(sum(Es) / 5 - E) <= 1e-13 * abs(E)
    g_avg = torch.stack(gs).mean(0)
    assert float(torch.linalg.vector_norm(g_avg - g)) <= 1e-12 * float(torch.linalg.vector_norm(g))
    # and one batch alone is not the full gradient (the test could fail)
    assert float(torch.linalg.vector_norm(gs[0] - g)) > 1e-3 * float(torch.linalg.vector_norm(g))


def test_batches_are_seeded_permutations_per_epoch():
    b = optim.Batches(10, 4, seed=7, device="cpu")
    assert b.per_epoch == 3 and not b.full
    epoch0 = torch.cat([b.indices(k) for k in range(3)])
    epoch1 = torch.cat([b.indices(k) for k in range(3, 6)])
    assert [len(b.indices(k)) for k in range(3)] == [4, 4, 2]
    assert sorted(epoch0.tolist()) == list(range(10)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch0, torch.from_numpy(np.random.default_rng([7, 0]).permutation(10)))
    again = optim.Batches(10, 4, seed=7, device="cpu")
    assert torch.equal(again.indices(4), b.indices(4))  # any step, in any order: a function of (seed, k)
    other = optim.Batches(10, 4, seed=8, device="cpu")
    assert not torch.equal(torch.cat([other.indices(k) for k in range(3)]), epoch0)
    assert optim.Batches(10, 0, 7, "cpu").full and optim.Batches(10, 10, 7, "cpu").indices(0) is None


# ------------------------------------------------------------------ runs
def test_sgd_minibatch_run_records_epochs_and_the_full_objective():
    lines = []
    prob = problem(options={"batch_size": 16, "epochs": 3, "lr": 0.05})
    res, metrics = training.train(prob, log=lines.append)
    h = res.history
    assert res.success and res.iterations == 12  # 3 epochs of ⌈60/16⌉ = 4 steps
    assert h["iteration"] == list(range(13)) and h["eval_iteration"] == [0, 4, 8, 12]
    assert len(h["train_objective"]) == len(h["test_objective"]) == len(h["train_accuracy"]) == 4
    # the recorded full objective at the end is the evaluation's E (R = 0 here: the same formula)
    assert abs(h["train_objective"][-1] - metrics["objective"]) <= 1e-12 * metrics["objective"]
    assert h["train_accuracy"][-1] == metrics["train_accuracy"] and h["test_accuracy"][-1] == metrics["test_accuracy"]
    assert any(line.startswith("epochs = 3: 12 iterations") for line in lines)
    epoch_lines = [line for line in lines if line.startswith("it ") and " acc " in line]
    assert [line.split()[1] for line in epoch_lines] == ["0", "4", "8", "12"]
    assert all(f"epoch {e}" in line for e, line in zip(range(4), epoch_lines))
    assert metrics["batch_size"] == 16 and metrics["steps_per_epoch"] == 4 and metrics["epochs"] == 3
    assert h["train_objective"][-1] < h["train_objective"][0]  # it trains


def test_shuffle_seed_default_is_the_init_seed_and_the_option_changes_it():
    a, _ = training.train(problem(options={"batch_size": 16}, iterations=6), quiet=True)
    b, _ = training.train(problem(options={"batch_size": 16, "seed": 0}, iterations=6), quiet=True)
    c, _ = training.train(problem(options={"batch_size": 16, "seed": 1}, iterations=6), quiet=True)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["K"], c.params["K"])


def test_full_batch_adam_is_the_same_with_batch_size_zero_or_at_least_m():
    runs = [training.train(problem("adam", 15, opts), quiet=True)[0]
            for opts in ({}, {"batch_size": 0}, {"batch_size": 60}, {"batch_size": 1000})]
    for r in runs[1:]:
        assert all(np.array_equal(r.params[k], runs[0].params[k]) for k in r.params)
        assert r.history == runs[0].history
    mini, _ = training.train(problem("adam", 15, {"batch_size": 59}), quiet=True)
    assert not np.array_equal(mini.params["K"], runs[0].params["K"])


@pytest.mark.parametrize("solver,opts", [("sgd", {"batch_size": 16, "lr": 0.05}),
                                         ("sgd", {"batch_size": 16, "lr": 0.05, "nesterov": True}),
                                         ("adam", {"batch_size": 16}), ("sgd", {"lr": 0.02})])
def test_an_interrupted_minibatch_run_resumes_bit_for_bit(solver, opts, monkeypatch):
    """Ctrl-C inside step 8 (after the optimiser moved, before its commit): the result is
    iteration 7 whole, equal to a run of 7; resumed to 13 (across epochs) it equals the
    uninterrupted run: parameters, history and the torch optimiser's state."""
    p = problem(solver, 13, opts)
    full, _ = training.train(p, quiet=True)
    ref, _ = training.train(p.replace(solver__iterations=7), quiet=True)
    real, calls = optim._gradient_step, {"n": 0}

    def broken(*a):
        calls["n"] += 1
        out = real(*a)
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(optim, "_gradient_step", broken)
    cut, _ = training.train(p, quiet=True)
    monkeypatch.setattr(optim, "_gradient_step", real)
    assert cut.interrupted and cut.iterations == 7
    assert all(np.array_equal(cut.params[k], ref.params[k]) for k in ref.params)
    # the run of 7 records the full figures at its end as well (iteration 7); else the same history
    n_eval = len(cut.history["eval_iteration"])
    assert ref.history["eval_iteration"][n_eval:] == ([7] if ref.history["eval_iteration"][-1] == 7
                                                       and 7 not in cut.history["eval_iteration"] else [])
    assert cut.history == {k: v[:n_eval] if k in EVAL_KEYS else v for k, v in ref.history.items()}
    from ocdl import api

    engine, data, params0 = api.prepare(p, cut.params)
    state = dict(cut.state)
    import io

    buf = io.BytesIO()
    torch.save(state["torch_optimizer"], buf)  # as written to optimizer.pt and read back
    state["torch_optimizer"] = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    res = engine.solve(p, data, params0, RunContext(state=state, history=cut.history))
    assert all(np.array_equal(res.params[k], full.params[k]) for k in full.params)
    assert res.history == full.history
    assert set(state) == {"iteration", "torch_optimizer"}  # the shuffling needs no state of its own


def test_float32_minibatch_runs():
    res, _ = training.train(problem(options={"batch_size": 16, "lr": 0.05}, dtype="float32"), quiet=True)
    assert res.success and res.params["K"].dtype == np.float64 and np.isfinite(res.history["objective"]).all()


def test_k_class_labels_are_sliced_as_columns():
    """Three classes: c is one-hot K × m and the batches slice its columns."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(45, 2))
    c = np.repeat([0, 1, 2], 15)
    X[:, 0] += c
    try:
        prob = Problem.from_arrays(X, c, network={"family": "resnet", "layers": 3},
                                   solver={"name": "sgd", "iterations": 9, "options": {"batch_size": 10}})
    except ocdl.OcdlError as e:  # pragma: no cover - before K-class problems
        pytest.skip(str(e))
    res = ocdl.solve(prob)
    assert res.status == "ok" and res.params["W"].shape == (3, 2)
    assert len(res.history["eval_iteration"]) >= 2 and all(0 <= a <= 1 for a in res.history["train_accuracy"])


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("flags,expected", [
    (["--solver", "sgd", "--batch-size", "-1"], "solver.options.batch_size: must be an integer ≥ 0"),
    (["--solver", "sgd", "--momentum", "1"], "solver.options.momentum: must be a number in [0, 1)"),
    (["--solver", "sgd", "--momentum", "0", "--nesterov"], "Nesterov momentum needs momentum > 0"),
    (["--solver", "sgd", "--lr", "nan"], "solver.options.lr: must be a finite number > 0"),
    (["--solver", "sgd", "--lr", "-1"], "solver.options.lr: must be a finite number > 0"),
    (["--solver", "adam", "--lr", "inf", "--batch-size", "8"], "solver.options.lr: must be a finite number > 0"),
    (["--solver", "adam", "--epochs", "-2"], "solver.options.epochs: must be an integer ≥ 0"),
    (["--solver", "adam", "--lr", "1e39", "--dtype", "float32"], "overflows float32"),
    (["--solver", "adam", "--shuffle-seed", "-1", "--batch-size", "8"], "solver.options.seed: must be an integer ≥ 0"),
    (["--solver", "gd-armijo", "--batch-size", "8"], "'batch_size' unknown for torch solver 'gd-armijo'"),
])
def test_bad_minibatch_options_are_one_line_and_write_nothing(flags, expected, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, *flags, "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ocdl: error: ") and expected in err[0], err
    assert not out.exists()


def test_gtol_with_minibatches_is_refused():
    with pytest.raises(ocdl.OcdlError, match="gtol: not used with minibatches"):
        ocdl.solve(problem(options={"batch_size": 8, "gtol": 1e-3}))


# ------------------------------------------------------------------ divergence
@pytest.mark.parametrize("solver,opts", [("adam", {"lr": 1e200}), ("adam", {"lr": 1e200, "batch_size": 16}),
                                         ("sgd", {"lr": 1e200}), ("sgd", {"lr": 1e200, "batch_size": 16})])
def test_a_diverging_run_stops_at_its_last_finite_iterate(solver, opts, tmp_path, capsys):
    out = tmp_path / "run"
    p = problem(solver, 20, opts)
    res, metrics = training.train(p, out=out, quiet=True)
    assert not res.success and metrics["status"] == "failed" and metrics["solver_status"] == "diverged"
    assert res.message.startswith("diverged at iteration 1: the ") and res.message.endswith("(lr too large?)")
    assert res.iterations == 0
    p0 = ocdl.api.initial_params(p, 2)
    with np.load(out / "params.npz") as z:
        assert all(np.array_equal(z[k], p0[k]) for k in p0)
    assert all(math.isfinite(x) for x in res.history["objective"])
    # the same through the command line: exit 1, the message on the last line
    assert main(["train", *SMALL, "--solver", solver, "--lr", "1e200", "--iterations", "5", "--out",
                 tmp_path / "cli"]) == 1
    assert "solver failed: diverged at iteration 1" in capsys.readouterr().out


def test_a_later_divergence_keeps_the_iterate_before_it(monkeypatch):
    """The step to iteration 4 made non-finite (its objective NaN): the result is iteration 3,
    equal to a run of 3 iterations."""
    p = problem("sgd", 10, {"batch_size": 16, "lr": 0.05})
    ref, _ = training.train(p.replace(solver__iterations=3), quiet=True)
    real, calls = optim.Objective.batch_value_grad, {"n": 0}

    def poisoned(self, theta, idx):
        calls["n"] += 1
        E, g = real(self, theta, idx)
        return (math.nan, g) if calls["n"] == 5 else (E, g)  # call 1 is θ₀, call k + 1 the step to k

    monkeypatch.setattr(optim.Objective, "batch_value_grad", poisoned)
    res, _ = training.train(p, quiet=True)
    assert res.message == "diverged at iteration 4: the objective became non-finite (lr too large?)"
    assert res.iterations == 3 and res.metrics["solver_status"] == "diverged"
    assert all(np.array_equal(res.params[k], ref.params[k]) for k in ref.params)
    n_eval = len(res.history["eval_iteration"])  # the run of 3 records the full figures at its end, too
    assert ref.history["eval_iteration"][n_eval:] == [3]
    assert res.history == {k: v[:n_eval] if k in EVAL_KEYS else v for k, v in ref.history.items()}


# ------------------------------------------------------------------ memory and the chunked evaluation
def test_chunked_evaluation_equals_the_single_sweep(monkeypatch):
    from ocdl.engine.torch import TorchEngine

    p = problem(objective=ObjectiveSpec(mean=True, tikhonov=REGULARISED["objective"].tikhonov, smooth=1e-2),
                net="odenet")
    from ocdl import api

    engine, data, params0 = api.prepare(p)
    whole = engine.evaluate(p, params0, data)
    monkeypatch.setattr(optim, "eval_chunk", lambda N, d, m, **k: 7)
    parts = engine.evaluate(p, params0, data)
    assert isinstance(engine, TorchEngine)
    assert abs(parts.objective - whole.objective) <= 1e-13 * abs(whole.objective)
    assert abs(parts.test_objective - whole.test_objective) <= 1e-13 * abs(whole.test_objective)
    for k in whole.gradient:
        assert np.max(np.abs(parts.gradient[k] - whole.gradient[k])) <= 1e-12 * np.max(np.abs(whole.gradient[k]))
    assert parts.train_accuracy == whole.train_accuracy and parts.test_accuracy == whole.test_accuracy
    assert np.array_equal(parts.states, whole.states)


def test_eval_chunk_and_the_memory_estimate_of_minibatches():
    assert optim.eval_chunk(15, 2, 1000) == 1000
    assert optim.eval_chunk(20, 784, 60000) == 2**27 // (21 * 784 * 8)
    from ocdl.engine.base import get

    eng = get("torch")
    mnist = problem("sgd", options={"batch_size": 128}).replace(network__family="resnet", network__layers=20,
                                                                 network__width=784)
    full = eng.memory_estimate(mnist.replace(solver__options={}), 784, 60000)[0]
    mini = eng.memory_estimate(mnist, 784, 60000)[0]
    # 250 MB for torch, 8 copies of the 12.3 M parameters (787 MB), the data and y^[N] (3 m·d:
    # 1.1 GB) and 4 × the larger of 21 states of 128 samples and the evaluation's 128 MiB chunk;
    # the full batch: 4 × 21 states of all 60 000 samples (31.5 GB)
    n_theta = 20 * 784 * 784 + 20 * 784 + 784 + 1 + 20
    chunk = 2**27 // (21 * 784 * 8)
    assert mini == 250 * 2**20 + 64 * n_theta + 4 * 21 * 784 * 8 * chunk + 3 * 60000 * 784 * 8  # 2.53 GiB
    assert full > 30 * 2**30

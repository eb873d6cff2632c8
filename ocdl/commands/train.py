"""``ocdl train``: train one network (PyTorch or CasADi engine) and write its run directory."""

from __future__ import annotations

import os
from pathlib import Path

from ocdl import activations, problem as P
from ocdl.errors import OcdlError


def add_problem_arguments(p):
    """Flags that describe a Problem (shared by train and other commands)."""
    g = p.add_argument_group("data")
    g.add_argument("--data", default="spiral",
                   help="donut1d | donut2d | spiral | squares | digits (8×8, bundled) | mnist (--data-path) | a .csv/.npz file")
    g.add_argument("--data-path", help="mnist: the folder of its four IDX files (raw or .gz)")
    g.add_argument("--n-per-class", type=int, help="digits, mnist: training images per class (default: all)")
    g.add_argument("--test-data", help="test set file (with a file --data; default: the training file)")
    g.add_argument("--n", type=int, default=1000, help="training samples (test: the same number, independent draw)")
    g.add_argument("--n-test", type=int, help="test samples of a generated data set (default: --n); digits, mnist: a "
                                                 "stratified subset of the held-out images (default: all)")
    g.add_argument("--noise", type=float, help="Gaussian noise (default: the data set's)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the generated training and test draws (default 0)")
    g = p.add_argument_group("network")
    g.add_argument("--net", default="rk", choices=P.FAMILIES,
                   help="network family: net (plain layers) | resnet (Euler, fixed steps) | rk (any tableau; default) "
                        "| odenet (Euler, learned steps) | odenet-simplex (steps on the simplex) | monotone (−Kᵀσ field)")
    g.add_argument("--tableau", default="rk4", help="registry name (see `ocdl tableau --list`)")
    g.add_argument("--tableau-file", help="a user tableau (TOML/JSON with A, b, optional c and name)")
    g.add_argument("--allow-inconsistent", action="store_true",
                   help="train a tableau with Σ b_i ≠ 1 (ODE order 0: the layers approximate no ODE), refused "
                        "otherwise; recorded as network.allow_inconsistent in config.toml")
    g.add_argument("--layers", type=int, default=15, help="number of layers N (default 15)")
    g.add_argument("--h", type=float, help="step size (default 0.1 for rk/monotone, 1/N otherwise)")
    g.add_argument("--T", type=float, help="final time T = N h")
    g.add_argument("--width", type=int, help="state dimension d (default: the input dimension)")
    g.add_argument("--lift", choices=("pad", "random", "pca"),
                   help="map from the features to y^[0]: pad (zero-padding to d ≥ the input dimension; default) | "
                        "random (a seeded orthonormal projection or embedding) | pca (the d leading principal "
                        "directions of the training features, d ≤ the input dimension)")
    g.add_argument("--lift-seed", type=int, help="seed of the random lift (default 0)")
    g.add_argument("--activation", default="tanh", help=f"σ: {' | '.join(activations.names())} (default tanh)")
    g.add_argument("--controls", default="per-layer", choices=P.CONTROLS,
                   help="per-layer: one (K_j, β_j) shared by the stages of a layer (default) | per-stage: one per stage")
    g.add_argument("--time-steps", choices=P.TIME_STEPS, help="default: the family's")
    g.add_argument("--field", help="vector field: sigma (σ(Ky+β)) | monotone (−Kᵀσ(Ky+β)); default: the family's")
    g.add_argument("--layer", choices=P.LAYERS, help="rk (a Runge–Kutta step, skip connection) | plain (y ← f(y, u)); "
                                                      "default: the family's")
    g = p.add_argument_group("classifier and objective")
    g.add_argument("--classifier", default="trainable", choices=("trainable", "fixed"),
                   help="train the classifier W, μ (default) or keep them fixed at --W/--mu")
    g.add_argument("--W", type=float, nargs="+", help="classifier weights (initial, or fixed)")
    g.add_argument("--mu", type=float, help="classifier bias (initial, or fixed)")
    g.add_argument("--classes", type=int, help="K, the number of classes (default: 1 + the largest training label); "
                                               "K ≥ 3: W ∈ R^{K×d}, μ ∈ R^K and the softmax hypothesis")
    g.add_argument("--loss", default="squared", choices=P.LOSSES,
                   help="squared: ½(S(z) − c)² with the logistic S, ½‖softmax(z) − e_c‖² for K classes (default) | "
                        "logistic, cross-entropy (the same): −log S or −log softmax(z)_c")
    g.add_argument("--mean", action="store_true", help="divide the loss by the number of samples")
    g.add_argument("--reg-tikhonov", type=float, default=0.0, help="Tikhonov weight on every trained parameter")
    for k in P.PARAM_KEYS:
        g.add_argument(f"--reg-{k}", type=float, help=f"Tikhonov weight on {k} (overrides --reg-tikhonov)")
    g.add_argument("--reg-smooth", type=float, default=0.0, help="weight of Σ‖u_{j+1} − u_j‖²/h")
    g = p.add_argument_group("initialisation")
    g.add_argument("--init-seed", type=int, default=0, help="seed of the initial K, β, W, μ (default 0)")
    g.add_argument("--beta-init", default="normal", choices=("normal", "zero"), help="initial β: N(0, 1) (default) or 0")
    g.add_argument("--mu-init", default="uniform", choices=("uniform", "normal", "zero"),
                   help="initial μ: U(0, 1) (default), N(0, 1) or 0")
    g.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                   help="floating point of the PyTorch engine's computation (default float64)")
    g.add_argument("--device", default="cpu", help="cpu | cuda | cuda:i (PyTorch engine)")


def problem_from_args(a) -> P.Problem:
    per_class, data_path = getattr(a, "n_per_class", None), getattr(a, "data_path", None)
    if data_path and a.data != "mnist":
        raise OcdlError("--data-path goes with --data mnist (the folder of its IDX files)")
    if a.data.endswith((".csv", ".npz")):
        data = P.DataSpec(name="file", path=a.data, test_path=a.test_data, n=max(a.n, 2), seed=a.data_seed,
                          n_per_class=per_class)
    else:
        if a.test_data:
            raise OcdlError("--test-data goes with a file --data")
        path = os.path.abspath(data_path) if data_path else None  # absolute: the run directory reruns anywhere
        data = P.DataSpec(name=a.data, n=a.n, n_test=a.n_test, noise=a.noise, seed=a.data_seed, path=path,
                          n_per_class=per_class)
    tik = {k: a.reg_tikhonov for k in P.PARAM_KEYS}
    for k in P.PARAM_KEYS:
        v = getattr(a, f"reg_{k}")
        if v is not None:
            tik[k] = v
    if a.tableau_file and not Path(a.tableau_file).is_file():
        raise OcdlError(f"tableau file {a.tableau_file!r} does not exist")
    return P.Problem(
        data=data,
        network=P.NetworkSpec(
            family=a.net, tableau=a.tableau_file or a.tableau, layers=a.layers, h=a.h, T=a.T,
            width=a.width, activation=a.activation, controls=a.controls, time_steps=a.time_steps,
            field=getattr(a, "field", None), layer=getattr(a, "layer", None),
            allow_inconsistent=True if getattr(a, "allow_inconsistent", False) else None,
            lift=getattr(a, "lift", None), lift_seed=getattr(a, "lift_seed", None),
        ),
        classifier=P.ClassifierSpec(trainable=a.classifier == "trainable", W=tuple(a.W) if a.W else None, mu=a.mu,
                                    classes=getattr(a, "classes", None)),
        objective=P.ObjectiveSpec(loss=a.loss, mean=a.mean, tikhonov=tik, smooth=a.reg_smooth),
        init=P.InitSpec(seed=a.init_seed, beta=a.beta_init, mu=a.mu_init),
        solver=P.SolverSpec(backend=a.backend, name=a.solver or _default_solver(a.backend),
                            iterations=1000 if a.iterations is None else a.iterations,
                            options=solver_options(a)),
        dtype=a.dtype,
        device=a.device,
    )


def _default_solver(backend):
    from ocdl.engine import base as engines

    return engines.get(backend).default_solver


def solver_options(a) -> dict:
    opts = {}
    for key in ("tol", "hessian", "formulation", "start", "lr", "eval_every", "progress_every", "checkpoint_every",
                "checkpoint_seconds", "gradient", "batch_size", "epochs", "momentum", "nesterov"):
        v = getattr(a, key, None)
        if v is not None:
            opts[key] = v
    if getattr(a, "shuffle_seed", None) is not None:
        opts["seed"] = a.shuffle_seed
    return opts


def add_solver_arguments(p):
    g = p.add_argument_group("solver")
    from ocdl.engine import base as engines

    g.add_argument("--backend", default="torch", choices=engines.names(), help="the engine")
    g.add_argument("--solver", help="; ".join(f"{e}: {' | '.join(s)}" for e, s in engines.engines().items()))
    g.add_argument("--iterations", type=int, help="iterations in total (default 1000; with --resume: the run's own)")
    g.add_argument("--tol", type=float, help="casadi: KKT tolerance (default 1e-10); torch newton: stop at "
                                             "‖∇E‖ ≤ tol·max(1, |E|) (default 1e-10)")
    g.add_argument("--hessian", choices=("exact", "lbfgs", "gauss-newton"),
                   help="casadi: Hessian of the Lagrangian (exact | lbfgs); newton: curvature products (exact | "
                        "gauss-newton)")
    g.add_argument("--formulation", choices=("full", "reduced"),
                   help="casadi: full-space NLP (states as variables, costates = multipliers; default) or reduced NLP "
                        "(single shooting, exact Hessian by the second-order adjoint; faster for large m·N)")
    g.add_argument("--start", choices=("initial", "reduced"),
                   help="casadi ipopt, full-space: start at the initial parameters (states by forward simulation; "
                        "default) or solve the reduced NLP first and start at its solution")
    g.add_argument("--lr", type=float, help="adam/lbfgs/sgd learning rate")
    g.add_argument("--batch-size", type=int, help="torch sgd/adam: samples per step (default 0: the full batch)")
    g.add_argument("--epochs", type=int, help="torch sgd/adam: train this many epochs of ⌈m/batch⌉ steps "
                                              "(instead of --iterations)")
    g.add_argument("--momentum", type=float, help="torch sgd: momentum in [0, 1) (default 0.9)")
    g.add_argument("--nesterov", action="store_true", default=None, help="torch sgd: Nesterov momentum")
    g.add_argument("--shuffle-seed", type=int, help="torch sgd/adam: seed of the minibatch shuffling "
                                                    "(default: --init-seed)")
    g.add_argument("--gradient", choices=("adjoint", "autograd"), help="torch: gradient used by the optimiser")
    g.add_argument("--eval-every", type=int, help="torch: record test objective/accuracies every k iterations "
                                                   "(default 0: auto, about 200 records per run)")
    g.add_argument("--progress-every", type=int, help="torch: one progress line every k iterations (default 0: auto, "
                                                       "about 20 lines per run)")
    g.add_argument("--checkpoint-every", type=int, help="torch: also write a snapshot of the run directory every k "
                                                         "iterations (default 0: by time only)")
    g.add_argument("--checkpoint-seconds", type=float,
                   help="torch: write a snapshot of the run directory every S seconds of training (default 30; 0: "
                        "by iterations only), so that a killed run loses at most that much")


def register(sub):
    p = sub.add_parser("train", help="train a network; writes a run directory")
    add_problem_arguments(p)
    add_solver_arguments(p)
    g = p.add_argument_group("run")
    g.add_argument("--config", help="a problem file (TOML); command-line flags are then ignored except --out/--init/--quiet")
    g.add_argument("--out", help="run directory to write")
    g.add_argument("--init", help="initial parameters: a run directory or .npz (K, beta, W, mu, h)")
    g.add_argument("--resume", help="continue the stopped run in this directory")
    g.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    g.add_argument("--evaluate-with", help="the engine that computes the final figures of metrics.json "
                                           "(default: the engine that solved)")
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(a) -> int:
    from ocdl import rundir, training

    if a.resume:
        problem, _, _ = rundir.load(a.resume)
        if a.iterations is not None:
            problem = problem.replace(solver__iterations=a.iterations)
    elif a.config:  # a problem file: relative paths in it are taken from its folder
        from ocdl import catalogue

        problem = catalogue.load(a.config)
    else:
        problem = problem_from_args(a)
    res, metrics = training.train(problem, out=a.out, init=a.init, resume=a.resume, quiet=a.quiet, force=a.force,
                                  evaluator=a.evaluate_with)
    if res.interrupted:
        return 130
    return 0 if res.success else 1


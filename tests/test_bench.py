"""Benchmarks print figures; here only that they run and report every figure (no timing asserts)."""

import json

from ocdl.cli import main


def test_bench_gradient_reports(capsys):
    rc = main(["bench", "gradient", "--n", "50", "--layers", "3", "--repeats", "2", "--train-iterations", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    g = out["gradient"]
    for k in ("forward_s", "autograd_s", "adjoint_s", "adjoint_over_forward", "adjoint_over_autograd",
              "autograd_saved_bytes", "adjoint_states_bytes"):
        assert g[k] > 0
    # the adjoint keeps the N+1 layer states only: (N+1)·d·m float64 values
    assert g["adjoint_states_bytes"] == 4 * 2 * 50 * 8
    assert [r["N"] for r in out["memory_scaling"]] == [3, 6, 12]
    assert out["training"]["iterations"] == 3

"""ocdl bench epoch: it runs on a tiny size and reports every figure (no timing asserts)."""

import json

from ocdl.cli import main


def test_bench_epoch_reports(capsys):
    rc = main(["bench", "epoch", "--n", "300", "--dim", "12", "--width", "16", "--layers", "3", "--classes", "3",
               "--batch-size", "64", "--steps", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["problem"]["m"] == 300 and out["problem"]["classes"] == 3 and out["problem"]["width"] == 16
    assert [r["dtype"] for r in out["rows"]] == ["float64", "float32"]
    for r in out["rows"]:
        assert r["steps_per_epoch"] == 5 and r["steps_timed"] == 2 and r["epoch_extrapolated"]
        assert r["epoch_s"] == r["step_s"] * 5 and 0 < r["step_min_s"] <= r["step_s"] <= r["step_max_s"]
        assert r["step_peak_bytes"] > 0
        # K, β of 3 layers at width 16, W ∈ R^{3×16}, μ ∈ R^3 (resnet: h fixed)
        assert r["parameters"] == 3 * 16 * 16 + 3 * 16 + 3 * 16 + 3
    assert out["rows"][0]["data_bytes"] == 2 * out["rows"][1]["data_bytes"] == 300 * 16 * 8


def test_bench_epoch_full_epoch_and_text(capsys):
    rc = main(["bench", "epoch", "--n", "100", "--dim", "4", "--layers", "2", "--classes", "2", "--batch-size", "32",
               "--full-epoch", "--dtypes", "float32", "--solver", "adam", "--gradient", "autograd"])
    text = capsys.readouterr().out
    assert rc == 0 and "all 4 steps run" in text and "float32: epoch" in text and "float64" not in text


def test_bench_epoch_bad_dtypes_is_one_line(capsys):
    assert main(["bench", "epoch", "--n", "100", "--dtypes", "float16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ocdl: error: --dtypes")

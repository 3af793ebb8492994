"""`examples/pinn.py` end to end with tiny flags."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--width", "16", "--depth", "2", "--features", "8", "--collocation", "64",
    "--chunks", "4", "--steps-per-call", "5", "--no-progress",
]  # fmt: skip


def _run(*args, timeout=600):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "pinn.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_allen_cahn_with_lbfgs_stage_run_file_and_figure(tmp_path):
    out, fig = tmp_path / "run.h5", tmp_path / "fig.png"
    proc = _run(
        "--pde", "allen_cahn", "--steps", "10", "--lbfgs-steps", "3",
        "--resolution", "16", "--seed", "2", "--out", str(out), "--plot", str(fig),
        *TINY,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.splitlines()[0])
    assert set(metrics) == {"rel_l2"} and np.isfinite(metrics["rel_l2"])
    # The CPU default imposes the initial condition exactly: no `ic` term.
    assert "AllenCahn1D: terms ['res']," in proc.stderr
    assert fig.stat().st_size > 20_000
    with h5py.File(out, "r") as f:
        assert f.attrs["problem"] == "AllenCahn1D"
        config = json.loads(f.attrs["config"])
        assert config["pde"] == "allen_cahn" and config["lbfgs_steps"] == 3
        assert np.isfinite(config["adam_metrics"]["rel_l2"])
        # The run file is the L-BFGS stage's: 3 steps, fixed weights.
        np.testing.assert_array_equal(f["history/step"][:], [1, 2, 3])
        weights = f["history/weight_res"][:]
        assert np.all(weights == weights[0])
        for name in ("prediction", "reference", "error"):
            assert f[f"predictions/{name}"].shape == (101, 16)
        np.testing.assert_allclose(f["predictions/t"][:], np.linspace(0, 1, 101))
        np.testing.assert_allclose(f["predictions/x"][:], -1 + np.arange(16) / 8)
        np.testing.assert_allclose(
            f["predictions/error"][:],
            f["predictions/prediction"][:] - f["predictions/reference"][:],
        )
        assert abs(f["metrics"].attrs["rel_l2"] - metrics["rel_l2"]) < 1e-5


def test_defaults_and_bad_flags():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import pinn
    finally:
        sys.path.pop(0)
    cpu = pinn.parse_args(["--pde", "allen_cahn"])
    assert (cpu.hard_initial, cpu.causal_eps, cpu.width) == (True, 10.0, 128)
    # --paper is jaxpi's configuration: the initial condition as a loss term.
    paper = pinn.parse_args(["--pde", "allen_cahn", "--paper"])
    assert (paper.hard_initial, paper.causal_eps, paper.width) == (False, 1.0, 256)
    assert paper.steps == 300_000 and paper.collocation == 8192
    flags = pinn.parse_args(["--pde", "allen_cahn", "--no-hard-initial"])
    assert flags.hard_initial is False
    assert pinn.build_problem(flags).term_names == ("res", "ic")
    assert pinn.parse_args(["--pde", "burgers"]).hard_initial is True
    assert pinn.parse_args(["--pde", "advection"]).hard_initial is False
    proc = _run("--pde", "advection", "--causal-eps", "-1")
    assert proc.returncode == 2 and "--causal-eps: must be" in proc.stderr
    proc = _run("--pde", "poisson", "--hard-initial")
    assert proc.returncode == 2
    assert "--hard-initial: poisson has no initial condition" in proc.stderr

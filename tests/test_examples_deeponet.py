"""End-to-end runs of examples/deeponet.py with tiny flags."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--n-train", "64", "--n-test", "16", "--n-sensors", "20", "--width", "16",
    "--depth", "1", "--basis", "8", "--batch-size", "8", "--steps", "20",
    "--steps-per-call", "10", "--no-progress",
]  # fmt: skip


def _run(tmp_path, *args):
    # The dataset cache goes to a temporary folder, never the user's.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "deeponet.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )


def test_deeponet_example_end_to_end(tmp_path):
    out, fig = tmp_path / "run.h5", tmp_path / "fig.png"
    proc = _run(
        tmp_path, *TINY, "--operator", "antiderivative", "--seed", "3",
        "--out", str(out), "--plot", str(fig),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.splitlines()[0])
    assert set(metrics) == {"rel_l2", "rel_l2_std"}
    assert "test rel. L2" in proc.stdout.splitlines()[1]
    assert fig.stat().st_size > 10_000
    # The dataset went to the per-user cache folder (here a temporary one).
    cached = list((tmp_path / "xdg" / "sciinr" / "operator").glob("*.h5"))
    assert len(cached) == 2  # train and test
    with h5py.File(out, "r") as f:
        assert f.attrs["problem"] == "Antiderivative"
        config = json.loads(f.attrs["config"])
        assert config["operator"] == "antiderivative" and config["fit"]["steps"] == 20
        predictions = f["predictions"]
        assert predictions["predictions"].shape == (16, 20, 1)
        assert predictions["targets"].shape == (16, 20, 1)
        assert predictions["inputs"].shape == (16, 20)
        assert predictions["errors"].shape == (16,)
        np.testing.assert_allclose(predictions["x"][:], np.linspace(0, 1, 20))
        # The axes are labelled by the coordinates, in order.
        dims = predictions["predictions"].dims
        assert [dims[i][0].name.split("/")[-1] for i in range(3)] == [
            "function",
            "x",
            "channel",
        ]
        errors = predictions["errors"][:]
        assert abs(errors.mean() - metrics["rel_l2"]) < 1e-5


def test_deeponet_example_rejects_unknown_operators(tmp_path):
    proc = _run(tmp_path, "--operator", "burgers")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr and "antiderivative" in proc.stderr

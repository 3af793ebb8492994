import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args, timeout=300):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_image_regression_example_end_to_end(tmp_path):
    out, fig = tmp_path / "run.h5", tmp_path / "fig.png"
    proc = _run(
        "image_regression.py",
        "--steps", "20", "--size", "16", "--width", "16", "--depth", "2",
        "--features", "16", "--steps-per-call", "10", "--seed", "3",
        "--out", str(out), "--plot", str(fig), "--no-progress",
    )  # fmt: skip
    metrics = json.loads(proc.stdout.splitlines()[0])
    assert set(metrics) == {"psnr_train", "psnr_test"}
    assert "test PSNR" in proc.stdout.splitlines()[1]
    assert fig.stat().st_size > 10_000
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "sciinr"
        assert f.attrs["problem"] == "ImageRegression"
        assert f.attrs["seed"] == 3
        config = json.loads(f.attrs["config"])
        assert config["size"] == 16 and config["fit"]["steps"] == 20
        np.testing.assert_array_equal(f["history/step"][:], np.arange(1, 21))
        assert f["predictions/image"].shape == (16, 16, 1)
        assert f["predictions/target"].shape == (16, 16, 1)
        np.testing.assert_allclose(f["predictions/x"][:], np.arange(16) / 16)
        # One named dimension per axis, shared by the image and its target.
        for name in ("image", "target"):
            scales = [d[0].name for d in f[f"predictions/{name}"].dims]
            assert scales == [f"/predictions/{a}" for a in ("x", "y", "channel")]
        assert abs(f["metrics"].attrs["psnr_test"] - metrics["psnr_test"]) < 1e-3
    # xarray (through h5netcdf, no netCDF dependency of ours) sees named dimensions.
    xarray = pytest.importorskip("xarray")
    tree = xarray.open_datatree(out, engine="h5netcdf", phony_dims="sort")
    assert tree["predictions"]["image"].dims == ("x", "y", "channel")
    assert tree["predictions"]["target"].dims == ("x", "y", "channel")


def test_image_regression_example_rejects_bad_flags():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "image_regression.py"),
         "--image", "no_such_image"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr and "camera" in proc.stderr

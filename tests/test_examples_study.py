"""End-to-end tests of `examples/encoding_study.py` and `examples/spectral_bias.py`.

The scripts run in this process (`main(argv)`), with tiny flags, so that the compiled
steps are shared between tests as they are between the cells of a grid; one test
runs the real command line in a subprocess.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

import sciinr


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import encoding_study  # noqa: E402
import spectral_bias  # noqa: E402


TINY = [
    "--size", "16", "--steps", "4", "--steps-per-call", "2", "--width", "8",
    "--depth", "2", "--features", "8",
]  # fmt: skip
GRID = ["--images", "camera", "--encodings", "none,siren", "--linears", "rwf"]
GRID += ["--norms", "none,batch"]
CELLS = [
    f"camera/{e}-rwf-{n}/seed0" for e in ("none", "siren") for n in ("none", "batch")
]


def _run(capsys, *argv):
    assert encoding_study.main([*TINY, *argv]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The 4-cell grid, trained once: its file, stdout and progress lines."""
    folder = tmp_path_factory.mktemp("study")
    out, fig = folder / "study.h5", folder / "study.png"
    argv = [*TINY, *GRID, "--seeds", "1", "--out", str(out), "--plot", str(fig)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert encoding_study.main(argv) == 0
    return out, fig, stdout.getvalue(), stderr.getvalue()


def test_study_writes_every_requested_cell(study):
    out, fig, stdout, log = study
    assert fig.stat().st_size > 20_000
    progress = [line for line in log.splitlines() if line.startswith("[")]
    assert len(progress) == 4 and all("test" in line for line in progress)
    with h5py.File(out, "r") as f:
        summary = f["summary"][()]
        settings = json.loads(f.attrs["settings"])
        assert settings["steps"] == 4 and settings["lr"] == 1e-3
        for name in CELLS:
            group = f[name]
            assert group.attrs["status"] == "done"
            assert group.attrs["step"] == 4
            assert group.attrs["learning_rate"] == 1e-3
            # The run-file layout of `sciinr.io`, readable back with `read_run`.
            run = sciinr.io.read_run(group)
            np.testing.assert_array_equal(run.history["step"], np.arange(1, 5))
            np.testing.assert_allclose(run.history["learning_rate"], 1e-3)
            assert run.predictions["image"].shape == (16, 16, 1)
            np.testing.assert_allclose(run.coordinates["x"], np.arange(16) / 16)
            assert run.config["seed"] == 0 and run.config["image"] == "camera"
            # The test PSNR recomputed from the stored prediction (odd pixels).
            pred = run.predictions["image"][1::2, 1::2]
            target = run.predictions["target"][1::2, 1::2]
            psnr = -10 * np.log10(np.mean((pred - target) ** 2))
            assert abs(psnr - run.metrics["psnr_test"]) < 1e-3
    assert len(summary) == 4
    names = {encoding_study._row_name(row) for row in summary}
    assert names == set(CELLS)
    assert set(summary["status"]) == {b"done"}
    assert np.all(summary["learning_rate"] == 1e-3)
    # The summary agrees with the cells, and the table on stdout with the summary.
    with h5py.File(out, "r") as f:
        for row in summary:
            metrics = f[encoding_study._row_name(row)]["metrics"].attrs
            assert row["psnr_test"] == pytest.approx(metrics["psnr_test"])
    # The tables on stdout: per variant, and the paired norm - no norm differences.
    table = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| variant | camera |" and len(table) == 1 + 4 + 1 + 2
    psnr = {encoding_study._row_name(r): r["psnr_test"] for r in summary}
    batch, plain = (
        psnr["camera/siren-rwf-batch/seed0"],
        psnr["camera/siren-rwf-none/seed0"],
    )
    assert f"| siren-rwf-batch | {batch:.2f} |" in table[1:5]
    assert f"| siren-rwf-batch | {batch - plain:.2f} |" in table[6:]


def test_study_resumes_and_skips_finished_cells(study, tmp_path, capsys):
    out = tmp_path / "study.h5"
    shutil.copyfile(study[0], out)
    with h5py.File(out, "r") as f:
        created = {name: f[name].attrs["created"] for name in CELLS}
    # The same grid with a second seed: seed 0 is skipped, seed 1 trained.
    _, log = _run(capsys, *GRID, "--seeds", "2", "--out", str(out))
    progress = [line for line in log.splitlines() if line.startswith("[")]
    assert len(progress) == 8
    assert sum("done earlier, skipped" in line for line in progress) == 4
    assert all("seed0: done earlier" in line for line in progress if "seed0" in line)
    with h5py.File(out, "r") as f:
        assert len(f["summary"]) == 8
        for name in CELLS:  # untouched
            assert f[name].attrs["created"] == created[name]
            assert f[name.replace("seed0", "seed1")].attrs["status"] == "done"
    # Nothing left to do: a third run trains nothing and changes nothing.
    before = out.read_bytes()
    _, log = _run(capsys, *GRID, "--seeds", "2", "--out", str(out))
    assert log.count("skipped") == 8
    assert out.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_study_records_failed_cells_and_goes_on(tmp_path, capsys):
    out = tmp_path / "failed.h5"
    grid = ["--images", "camera", "--encodings", "none", "--linears", "dense"]
    grid += ["--norms", "none,batch", "--seeds", "1", "--out", str(out)]
    _, log = _run(capsys, *grid, "--lr", "1e30")
    progress = [line for line in log.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and all("FAILED at step" in p for p in progress)
    with h5py.File(out, "r") as f:
        summary = f["summary"][()]
        assert list(summary["status"]) == [b"failed", b"failed"]
        for row in summary:
            group = f[encoding_study._row_name(row)]
            assert group.attrs["status"] == "failed"
            assert 1 <= group.attrs["step"] == row["step"] <= 4
            assert f"step {row['step']}" in progress[int(row["norm"] == b"batch")]
            assert "Non-finite" in group.attrs["error"]
            assert np.isnan(row["psnr_test"])
    # Failed cells are finished: skipped on rerun, unless --retry-failed.
    _, log = _run(capsys, *grid, "--lr", "1e30")
    assert log.count("failed earlier, skipped") == 2
    _, log = _run(capsys, *grid, "--lr", "1e30", "--retry-failed")
    assert log.count("FAILED at step") == 2


def test_study_lr_sweep_picks_and_records_the_rate(tmp_path, capsys):
    out = tmp_path / "sweep.h5"
    grid = ["--images", "camera", "--encodings", "none", "--linears", "dense"]
    grid += ["--norms", "batch", "--seeds", "1", "--out", str(out)]
    _, log = _run(capsys, *grid, "--lr-sweep", "1e30,1e-3", "--sweep-steps", "2")
    assert "lr sweep 1e+30 -> -inf dB, 0.001 -> " in log
    with h5py.File(out, "r") as f:
        variant = f["camera/none-dense-batch"]
        np.testing.assert_array_equal(variant.attrs["lr_sweep_rates"], [1e30, 1e-3])
        assert variant.attrs["learning_rate"] == 1e-3
        assert f["camera/none-dense-batch/seed0"].attrs["learning_rate"] == 1e-3
        assert f["summary"]["learning_rate"][0] == 1e-3
        assert f["summary"]["status"][0] == b"done"


def test_study_refuses_to_resume_other_settings(study, tmp_path):
    out = tmp_path / "study.h5"
    shutil.copyfile(study[0], out)
    with pytest.raises(SystemExit, match="other settings.*steps: file 4, now 5"):
        encoding_study.main([*TINY, *GRID, "--steps", "5", "--out", str(out)])


def test_atomic_update_leaves_the_file_as_it_was(tmp_path):
    out = tmp_path / "file.h5"
    with encoding_study.atomic_update(out) as f:
        f["a"] = np.arange(3)
    before = out.read_bytes()
    with pytest.raises(RuntimeError, match="mid-write"):
        with encoding_study.atomic_update(out) as f:
            f["b"] = np.arange(10_000)
            raise RuntimeError("mid-write")
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["file.h5"]
    # An update keeps what was there; a fresh write replaces it whole.
    with encoding_study.atomic_update(out) as f:
        f["b"] = np.arange(2)
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["a", "b"]
    with encoding_study.atomic_update(out, fresh=True) as f:
        f["c"] = np.arange(2)
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["c"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--encodings", "none,fourier,nerf"], "unknown name 'nerf'"),
        (["--norms", ","], "empty list, so the grid would be empty"),
        (["--images", "camera,lena"], "--images: unknown name 'lena'"),
        (["--seeds", "0"], "--seeds: must be positive, got 0"),
        (["--lr", "1e-3", "--lr-sweep", "1e-3"], "not allowed with argument"),
        (["--lr-sweep", "1e-3,-1"], "expected positive learning rates"),
        (["--activation", "swish"], "unknown name 'swish'"),
    ],
    ids=["encoding", "empty", "image", "seeds", "lr-and-sweep", "sweep", "act"],
)
def test_study_bad_flags(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        encoding_study.parse_args([*flags, "--out", str(tmp_path / "x.h5")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_study_invalid_model_fails_before_training(tmp_path, capsys):
    out = tmp_path / "x.h5"
    argv = [*TINY, "--depth", "1", "--encodings", "siren", "--norms", "layer"]
    assert encoding_study.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: `norm='layer'` needs `depth >= 2`" in err
    assert not out.exists() and "[" not in err


def test_study_command_line_rejects_zero_seeds():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "encoding_study.py"),
         "--seeds", "0"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "argument --seeds: must be positive, got 0" in proc.stderr


def test_spectral_bias_end_to_end(tmp_path, capsys):
    out, fig = tmp_path / "bias.h5", tmp_path / "bias.png"
    argv = [
        *TINY, "--octaves", "1,4", "--models", "none-dense-none,siren-rwf-batch",
        "--out", str(out), "--plot", str(fig),
    ]  # fmt: skip
    assert spectral_bias.main(argv) == 0
    stdout = capsys.readouterr().out
    assert fig.stat().st_size > 20_000
    with h5py.File(out, "r") as f:
        table = f["psnr_test"][()]
        assert table.shape == (2, 2) and np.all(np.isfinite(table))
        assert [m.decode() for m in f["psnr_test"].dims[0][0][()]] == [
            "none-dense-none",
            "siren-rwf-batch",
        ]
        np.testing.assert_array_equal(f["psnr_test"].dims[1][0][()], [1, 4])
        run = sciinr.io.read_run(f["siren-rwf-batch/octave4"])
        assert run.metrics["psnr_test"] == pytest.approx(table[1, 1])
        assert run.config["octave"] == 4 and run.predictions["image"].shape[:2] == (
            16,
            16,
        )
    assert f"| siren-rwf-batch | {table[1, 0]:.2f} | {table[1, 1]:.2f} |" in stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--models", "fourier-rwf"], "is not <encoding>-<linear>-<norm>"),
        (["--models", "relu-dense-none"], "is not <encoding>-<linear>-<norm>"),
        (["--octaves", "0,4"], "expected positive integers"),
    ],
    ids=["short", "encoding", "octave"],
)
def test_spectral_bias_bad_flags(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        spectral_bias.parse_args(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err

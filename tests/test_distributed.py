"""Multi-process training (`jax.distributed`) on loopback: 2 CPU processes, Gloo.

The processes are started with `sciinr.distributed.launch` (a free port, a timeout so
that a hang cannot stall the suite) running `tests/distributed_worker.py`; the
single-process references are computed here, in the test process.
"""

import concurrent.futures
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import equinox as eqx
import h5py
import jax
import jax.tree_util as jtu
import numpy as np
import optax
import pytest
from distributed_worker import ADAM, KILL_AT, run_kwargs, setup, with_nan
from helpers import without_runtime_typechecks

import sciinr
import sciinr.distributed


TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
TIMEOUT = 240  # seconds for one launch; the runs below take 10-30 s on 2 cores


def _launch(mode, out, processes=2):
    stdout, stderr = io.StringIO(), io.StringIO()
    status = sciinr.distributed.launch(
        [sys.executable, os.path.join(TESTS, "distributed_worker.py"), mode, str(out)],
        processes,
        timeout=TIMEOUT,
        env={"PYTHONPATH": ROOT},
        stdout=stdout,
        stderr=stderr,
    )
    return status, stdout.getvalue(), stderr.getvalue()


def _lines(stdout, tag):
    """`{process: rest of the line}` of the lines `[<process>] <tag> ...`."""
    found = {}
    for line in stdout.splitlines():
        prefix, _, rest = line.partition("] ")
        if rest.startswith(tag + " "):
            found[int(prefix.lstrip("["))] = rest[len(tag) + 1 :]
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-process runs: one killed mid-way (both processes, SIGKILL), then one
    that resumes it and runs the rest (one step, 100 steps, sampler, divergence)."""
    out = tmp_path_factory.mktemp("runs")
    (out / "kill").mkdir()
    (out / "train").mkdir()
    t0 = time.monotonic()
    runs = {"kill": _launch("kill", out)}
    runs["killed_checkpoint"] = out / "killed_at_60.h5"
    shutil.copy(out / "kill" / "ckpt.h5", runs["killed_checkpoint"])
    runs["main"] = _launch("main", out)
    assert runs["main"][0] == 0, runs["main"][2][-3000:]
    runs["seconds"] = time.monotonic() - t0
    runs["train_dir"], runs["kill_dir"] = out / "train", out / "kill"
    return runs


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The same runs in this (single-device) process."""
    problem, field, key = setup()
    one = sciinr.fit(problem, field, optax.sgd(0.1), steps=1, key=key, progress=False)
    out = tmp_path_factory.mktemp("single")
    full = sciinr.fit(problem, field, ADAM, key=key, **run_kwargs(out))
    no_files = {k: v for k, v in run_kwargs(out).items() if "checkpoint" not in k}
    with pytest.raises(sciinr.NonFiniteLossError) as error:
        sciinr.fit(with_nan(problem), field, ADAM, key=key, **no_files)
    return {"field": field, "one": one, "full": full, "error": error.value}


def _leaves(tree):
    return [np.asarray(x) for x in jtu.tree_leaves(eqx.filter(tree, eqx.is_array))]


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_two_processes_see_all_devices(runs):
    devices = _lines(runs["main"][1], "DEVICES")
    assert devices == {0: "2 2", 1: "2 2"}


def test_one_step_equals_single_process(runs, single):
    two = sciinr.io.load_run(runs["train_dir"] / "one.h5", single["field"])
    params_two = _leaves(two.field)
    params_one = _leaves(single["one"].field)
    start = _leaves(single["field"])
    assert [p.shape for p in params_two] == [p.shape for p in params_one]
    # The step moved the parameters (so equality below is not trivial) ...
    assert _max_diff(params_one, start) > 1e-3
    # ... by the same update on 2 processes: measured 1.5e-8 for a change of 0.16
    # (float reassociation of the gradient's sum over the two halves of the batch).
    assert _max_diff(params_one, params_two) < 1e-6


def test_hundred_steps_match_single_process(runs, single):
    metrics = _lines(runs["main"][1], "METRICS")
    assert set(metrics) == {0, 1} and metrics[0] == metrics[1]
    two = sciinr.io.load_run(runs["train_dir"] / "run.h5")
    one = single["full"]
    assert set(two.metrics) == {"psnr_train", "psnr_test"}
    # Measured: train PSNR 25.177036 vs 25.177032 dB, test PSNR equal, losses equal
    # to 1.2e-6 (relative) at every step; the run learned (train PSNR 17.1 dB at
    # step 50, 25.2 dB at step 100).
    for name in ("psnr_train", "psnr_test"):
        assert abs(two.metrics[name] - one.metrics[name]) < 1e-3
    assert one.metrics["psnr_train"] > 14.0
    np.testing.assert_array_equal(two.history["step"], one.history["step"])
    np.testing.assert_allclose(two.history["loss"], one.history["loss"], rtol=1e-4)
    assert two.config["fit"]["processes"] == 2 and two.config["fit"]["devices"] == 2
    # The predictions were sharded over the processes, then gathered for the file,
    # in order.
    problem, _, _ = setup()
    expected = sciinr.predict(problem, one.field)
    assert two.predictions["image"].shape == expected["image"].shape == (16, 16, 1)
    np.testing.assert_allclose(two.predictions["image"], expected["image"], atol=1e-5)
    np.testing.assert_array_equal(two.predictions["target"], expected["target"])
    predict = _lines(runs["main"][1], "PREDICT")
    assert set(predict) == {0}
    shape, difference = predict[0].rsplit(" ", 1)
    assert shape == "(16, 16, 1)" and float(difference) < 1e-5


def test_only_process_zero_writes_files(runs):
    writes = {p: json.loads(w) for p, w in _lines(runs["main"][1], "WRITES").items()}
    assert set(writes) == {0, 1}
    assert writes[1] == []  # process 1 created, opened for writing, renamed nothing
    written = {os.path.basename(w) for w in writes[0]}
    assert {"one.h5", "run.h5", "ckpt.h5", "resumed.h5"} <= written
    # What is left: those files, no temporary file.
    assert sorted(os.listdir(runs["train_dir"])) == ["ckpt.h5", "one.h5", "run.h5"]
    assert sorted(os.listdir(runs["kill_dir"])) == ["ckpt.h5", "resumed.h5"]


def test_each_process_samples_only_its_share(runs):
    sample = _lines(runs["main"][1], "SAMPLE")
    assert set(sample) == {0, 1}
    for line in sample.values():
        # The global batch is 48 points; each process holds 24 of them, and its
        # compiled sampler draws 24 random numbers, not 48.
        assert line == "(48, 2) [(24, 2)] 24", line


def test_non_finite_loss_stops_every_process_with_the_same_error(runs, single):
    # The NaN pixel lies in one process's half of the batch; the loss is a global
    # mean, replicated, so both processes see it at the same step and raise the
    # error of the single-process run.
    errors = _lines(runs["main"][1], "NONFINITE")
    assert set(errors) == {0, 1}
    error = single["error"]
    assert error.step > 1 and error.term == "mse"
    assert errors[0] == errors[1] == f"{error.step} mse {error}"


def test_resume_after_killing_both_processes_equals_uninterrupted(runs):
    status, stdout, _ = runs["kill"]
    assert status == 128 + 9  # SIGKILL
    assert "WRITES" not in stdout  # neither process got past the kill
    with h5py.File(runs["killed_checkpoint"], "r") as file:
        assert file.attrs["step"] == KILL_AT - 20  # the last one written
    resumed = sciinr.io.load_run(runs["kill_dir"] / "resumed.h5")
    full = sciinr.io.load_run(runs["train_dir"] / "run.h5")
    # Bit for bit: the same program on the same processes from the same state.
    for name, value in full.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)
    for name, column in full.history.items():
        if name not in ("wall_time", "steps_per_s"):
            np.testing.assert_array_equal(resumed.history[name], column)
    assert resumed.metrics == full.metrics


def test_two_process_checkpoint_resumes_on_one_process(runs, single, tmp_path):
    # Checkpoints hold host data: a run checkpointed by 2 processes continues on 1.
    problem, field, key = setup()
    path = tmp_path / "ckpt.h5"
    shutil.copy(runs["killed_checkpoint"], path)
    kwargs = {**run_kwargs(tmp_path), "checkpoint": path}
    resumed = sciinr.fit(problem, field, ADAM, key=key, resume=True,
                         **kwargs)  # fmt: skip
    one = single["full"]
    # Measured: parameters equal to 2.4e-7, PSNRs to 4e-6 dB.
    assert _max_diff(_leaves(resumed.field), _leaves(one.field)) < 1e-4
    for name in ("psnr_train", "psnr_test"):
        assert abs(resumed.metrics[name] - one.metrics[name]) < 1e-3


# --------------------------------------------------------------------------------------
# Bad launches: a clear error within the timeout, never a hang
# --------------------------------------------------------------------------------------


_JOIN = "import sciinr.distributed as d; d.initialize(timeout={timeout}{extra})"


def _clean_env(**variables):
    """This environment without any launcher or cluster variable, plus `variables`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SCIINR_", "SLURM_", "OMPI_", "PMI_", "JAX_COORD"))
    }
    return {**env, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", **variables}


_CRASH = """
import sys
import sciinr.distributed
sciinr.distributed.initialize(timeout=60)
import jax, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec
mesh = jax.make_mesh((2,), ("d",), axis_types=(AxisType.Auto,))
x = jax.make_array_from_callback(
    (2, 8), NamedSharding(mesh, PartitionSpec("d")), lambda i: np.ones((1, 8))
)
total = jax.jit(lambda x: x.sum(0), out_shardings=NamedSharding(mesh, PartitionSpec()))
total(x).block_until_ready()
if jax.process_index() == 1:
    raise RuntimeError("process 1 fails")
for _ in range(10_000):  # process 0 waits for it in the next collective
    total(x).block_until_ready()
"""


def test_bad_launches_fail_clearly_within_the_timeout():
    timeout = 8
    t0 = time.monotonic()
    # Process 1 of 2 whose coordinator (process 0) never starts.
    port = sciinr.distributed.free_port()
    lonely = subprocess.Popen(
        [sys.executable, "-c", _JOIN.format(timeout=timeout, extra="")],
        env=_clean_env(
            SCIINR_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            SCIINR_NUM_PROCESSES="2",
            SCIINR_PROCESS_ID="1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Nothing says how to start: no arguments, no launcher, no cluster.
    nowhere = subprocess.Popen(
        [sys.executable, "-c", _JOIN.format(timeout=timeout, extra="")],
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def launch(code):
        stderr = io.StringIO()
        status = sciinr.distributed.launch(
            [sys.executable, "-c", code],
            2,
            timeout=120,
            env=_clean_env(),
            stdout=io.StringIO(),
            stderr=stderr,
        )
        return status, stderr.getvalue(), time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor() as pool:
        # Two processes started, each told that the run has three.
        mismatched = pool.submit(
            launch, _JOIN.format(timeout=timeout, extra=", num_processes=3")
        )
        # A process that fails after joining: the run ends, it does not hang.
        crashed = pool.submit(launch, _CRASH)
        status, message, seconds = mismatched.result()
        crash_status, crash_message, crash_seconds = crashed.result()
    _, lonely_err = lonely.communicate(timeout=120)
    lonely_time = time.monotonic() - t0
    _, nowhere_err = nowhere.communicate(timeout=120)

    # Each waited `timeout` seconds, then exited with status 1 and an explanation
    # (instead of JAX's C++ abort later on); the rest of the time is Python start-up.
    assert status == 1, message[-2000:]
    assert "could not join the distributed run within 8 s" in message
    assert "not all 3 processes registered" in message
    assert "Check failure" not in message  # no C++ stack trace
    assert timeout < seconds < timeout + 60
    assert lonely.returncode == 1, lonely_err[-2000:]
    assert "Process 1 of 2 could not join" in lonely_err
    assert f"nothing accepts connections at 127.0.0.1:{port}" in lonely_err
    assert timeout < lonely_time < timeout + 60
    assert nowhere.returncode == 1
    assert "ValueError: Cannot tell how to start the distributed run" in nowhere_err
    assert "python -m sciinr.distributed" in nowhere_err
    # The failing process exits at once (not after JAX's 5-minute shutdown wait),
    # and process 0's collective fails as soon as its peer is gone.
    assert crash_status == 1, crash_message[-2000:]
    assert "[1] RuntimeError: process 1 fails" in crash_message
    assert crash_seconds < 60


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(coordinator_address="localhost"), "'host:port'"),
        (dict(coordinator_address="localhost:99999"), "port in 1 ... 65535"),
        (dict(num_processes=0), "`num_processes` must be a positive integer"),
        (dict(num_processes=2, process_id=2), r"`process_id` must be in 0 \.\.\. 1"),
        (dict(process_id="0"), "`process_id` must be an integer"),
        (dict(timeout=0), "`timeout` must be a positive number"),
    ],
    ids=["no-port", "bad-port", "processes", "id-range", "id-type", "timeout"],
)
def test_initialize_rejects_bad_arguments(kwargs, match):
    # Checked before JAX is touched (this process has computed already, so JAX
    # itself would refuse to initialize).
    with without_runtime_typechecks(), pytest.raises(ValueError, match=match):
        sciinr.distributed.initialize(**kwargs)


def test_initialize_names_a_malformed_environment_variable(monkeypatch):
    monkeypatch.setenv("SCIINR_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="SCIINR_NUM_PROCESSES must be an integer"):
        sciinr.distributed.initialize()


# --------------------------------------------------------------------------------------
# The launcher (these children do not use JAX)
# --------------------------------------------------------------------------------------


def _python(code):
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_launch_sets_each_process_up_and_prefixes_its_output():
    stdout = io.StringIO()
    code = """
        import os
        names = ("SCIINR_PROCESS_ID", "SCIINR_NUM_PROCESSES",
                 "SCIINR_COORDINATOR_ADDRESS", "JAX_PLATFORMS", "JAX_NUM_CPU_DEVICES")
        print(*(os.environ[n] for n in names))
    """
    status = sciinr.distributed.launch(
        _python(code), 3, devices_per_process=2, port=12345, stdout=stdout
    )
    assert status == 0
    lines = sorted(stdout.getvalue().splitlines())
    assert lines == [f"[{i}] {i} 3 127.0.0.1:12345 cpu 2" for i in range(3)]


def test_launch_stops_the_others_when_one_fails():
    stderr = io.StringIO()
    code = """
        import os, sys, time
        if os.environ["SCIINR_PROCESS_ID"] == "1":
            sys.exit(3)
        time.sleep(300)
    """
    t0 = time.monotonic()
    status = sciinr.distributed.launch(_python(code), 3, stderr=stderr)
    assert status == 3
    assert time.monotonic() - t0 < 60  # not the 300 s the others would sleep
    assert "process 1 exited with status 3; stopping the other" in stderr.getvalue()


def test_launch_timeout_stops_everything():
    stderr = io.StringIO()
    t0 = time.monotonic()
    status = sciinr.distributed.launch(
        _python("import time; time.sleep(300)"), 2, timeout=1, stderr=stderr
    )
    assert status == 124
    assert time.monotonic() - t0 < 60
    assert "timeout after 1 s" in stderr.getvalue()


def test_launch_command_line(tmp_path, capsys):
    from sciinr.distributed._launch import main

    script = tmp_path / "hello.py"
    script.write_text("import os; print('hi', os.environ['SCIINR_PROCESS_ID'])\n")
    assert main(["--processes", "2", str(script)]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == ["[0] hi 0", "[1] hi 1"]
    with pytest.raises(SystemExit):
        main(["--processes", "2"])  # no script
    assert "give the script to run" in capsys.readouterr().err


def test_launch_rejects_bad_arguments():
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match="`processes` must be a positive"):
            sciinr.distributed.launch([sys.executable, "-c", "pass"], 0)
        with pytest.raises(ValueError, match="`command` must be a non-empty list"):
            sciinr.distributed.launch("python train.py", 2)


# --------------------------------------------------------------------------------------
# The examples' `--distributed`
# --------------------------------------------------------------------------------------


@pytest.fixture
def cli():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import _cli

        yield _cli
    finally:
        sys.path.remove(os.path.join(ROOT, "examples"))


def test_cli_distributed_flag_initializes_when_parsed(cli, monkeypatch):
    calls = []
    monkeypatch.setattr(sciinr.distributed, "initialize", lambda: calls.append(1))
    parser = cli.parser("An example.\n\nMore.")
    cli.add_training_arguments(parser)
    args = parser.parse_args([])
    assert not args.distributed and calls == []
    assert cli.mesh(args) is None  # single-process runs are unchanged
    assert cli.main_process()
    with pytest.raises(RuntimeError, match="jax.distributed is not initialized"):
        cli.mesh(parser.parse_args(["--distributed"]))
    assert calls == [1]  # initialized while parsing, before any JAX computation
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    mesh = cli.mesh(parser.parse_args(["--distributed"]))
    assert mesh.devices.size == jax.device_count() and mesh.axis_names == ("data",)


def test_cli_distributed_flag_without_a_launcher_is_a_usage_error(
    cli, capsys, monkeypatch
):
    # What JAX says in a fresh process when nothing describes a distributed run
    # (here JAX has computed already and would refuse for that reason instead).
    def undetected(*args, **kwargs):
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", undetected)
    for name in ("SCIINR_COORDINATOR_ADDRESS", "SCIINR_NUM_PROCESSES"):
        monkeypatch.delenv(name, raising=False)
    parser = cli.parser("An example.")
    cli.add_training_arguments(parser)
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["--distributed"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "argument --distributed: Cannot tell how to start the distributed" in err
    assert "`coordinator_address`, `num_processes`, `process_id` were not" in err


@pytest.mark.slow
def test_example_with_distributed_flag_matches_single_process(tmp_path):
    flags = ["--steps", "20", "--size", "16", "--width", "16", "--depth", "2",
             "--features", "16", "--steps-per-call", "10", "--no-progress"]  # fmt: skip
    script = os.path.join(ROOT, "examples", "image_regression.py")
    single = subprocess.run(
        [sys.executable, script, *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert single.returncode == 0, single.stderr[-2000:]
    stdout, stderr = io.StringIO(), io.StringIO()
    out, fig = tmp_path / "run.h5", tmp_path / "fig.png"
    status = sciinr.distributed.launch(
        [sys.executable, script, *flags, "--distributed",
         "--out", str(out), "--plot", str(fig)],
        2,
        timeout=300,
        env={"PYTHONPATH": ROOT},
        stdout=stdout,
        stderr=stderr,
    )  # fmt: skip
    assert status == 0, stderr.getvalue()[-3000:]
    # Metrics (one JSON line, from process 0 only) as on one process.
    lines = [l for l in stdout.getvalue().splitlines() if l.startswith("[")]
    metrics = [json.loads(l[4:]) for l in lines if l[4:].startswith("{")]
    assert [l[:3] for l in lines if l[4:].startswith("{")] == ["[0]"]
    expected = json.loads(single.stdout.splitlines()[0])
    for name, value in expected.items():
        assert abs(metrics[0][name] - value) < 1e-3
    assert fig.stat().st_size > 10_000
    run = sciinr.io.load_run(out)
    assert run.config["distributed"] is True
    assert run.config["fit"]["processes"] == 2
    assert sorted(os.listdir(tmp_path)) == ["fig.png", "run.h5"]


# --------------------------------------------------------------------------------------
# The check that every process holds the same replicated values
# --------------------------------------------------------------------------------------


def test_check_same_names_the_first_array_that_differs(monkeypatch):
    from jax.experimental import multihost_utils

    from sciinr._trainer._multihost import check_same

    def two_processes(other):
        """`process_allgather` as on 2 processes, the second seeing `other(x)`."""
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(
            multihost_utils, "process_allgather", lambda x: np.stack([x, other(x)])
        )

    tree = {"field": (np.zeros(3), np.ones(2)), "key": jax.random.key(0)}
    two_processes(lambda x: x)
    check_same(tree, "state")  # the same everywhere: no error

    def differs_at_second(x):
        return x if x.shape == (1,) else np.where(np.arange(len(x)) == 1, x + 1, x)

    two_processes(differs_at_second)
    with pytest.raises(
        ValueError,
        match=r"state differs between processes: the "
        r"array at `\['field'\]\[1\]` on process 1",
    ) as error:
        check_same(tree, "state")  # fmt: skip
    assert "the same seed on every process" in str(error.value)

    two_processes(lambda x: x + 1 if x.shape == (1,) else x)  # another leaf count
    with pytest.raises(ValueError, match=r"different number of arrays .* \[3, 4\]"):
        check_same(tree, "state")

import os
import subprocess
import sys
import textwrap

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
import pytest
from helpers import make_toy_problem, ToyRegression, without_runtime_typechecks

import sciinr
import sciinr._trainer._checkpointer as trainer_module
from sciinr.nn import CoordinateMLP, FourierFeatures


def _field(key, norm=None, linear="rwf"):
    fkey, mkey = jr.split(key)
    encoding = FourierFeatures(2, 8, sigma=1.0, key=fkey)
    return CoordinateMLP(
        2, 1, 16, 2, encoding=encoding, linear=linear, norm=norm, key=mkey
    )


def _params(field):
    return eqx.filter(field, eqx.is_inexact_array)


def _assert_trees_equal(a, b):
    leaves_a, leaves_b = jtu.tree_leaves(_params(a)), jtu.tree_leaves(_params(b))
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_fit_learns_toy_problem():
    problem = make_toy_problem(n=64)
    field = _field(jr.key(0))
    before = float(problem.evaluate(field)["rel_l2"])
    result = sciinr.fit(
        problem,
        field,
        optax.adam(1e-2),
        steps=300,
        key=jr.key(1),
        steps_per_call=100,
        progress=False,
    )
    # Measured: rel_l2 about 1.0 before and about 0.02 after; wide margins.
    assert before > 0.5
    assert result.metrics["rel_l2"] < 0.1
    np.testing.assert_array_equal(result.history["step"], np.arange(1, 301))
    assert result.history["loss"][-1] < result.history["loss"][0] / 50


@pytest.mark.parametrize("norm", [None, "batch"], ids=["plain", "batchnorm"])
def test_chunking_invariance(norm):
    problem = make_toy_problem(n=64, batch_size=16)
    field = _field(jr.key(2), norm=norm)
    kwargs = dict(steps=30, key=jr.key(3), progress=False, eval_every=10)
    a = sciinr.fit(problem, field, optax.adam(1e-2), steps_per_call=1, **kwargs)
    b = sciinr.fit(problem, field, optax.adam(1e-2), steps_per_call=10, **kwargs)
    assert a.history.keys() == b.history.keys()
    for name in a.history:
        if name in ("wall_time", "steps_per_s"):
            continue
        np.testing.assert_allclose(a.history[name], b.history[name], rtol=1e-6)
    assert np.isfinite(a.history["rel_l2"]).sum() == 3  # steps 10, 20, 30
    for x, y in zip(
        jtu.tree_leaves(_params(a.field)), jtu.tree_leaves(_params(b.field))
    ):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


class _CountingProblem(ToyRegression):
    def loss(self, field, batch):
        _TRACES.append(1)  # a Python side effect: runs once per trace
        return super().loss(field, batch)


_TRACES: list[int] = []


@pytest.mark.parametrize(
    "steps, checkpoint, expected",
    [(40, False, 1), (45, False, 2), (40, True, 2)],
    ids=["multiple", "short-last-chunk", "checkpoint-guard-once"],
)
def test_step_traced_once_across_chunks(tmp_path, steps, checkpoint, expected):
    base = make_toy_problem(n=32)
    problem = _CountingProblem(base.coords, base.values, base.grid, None)
    _TRACES.clear()
    sciinr.fit(
        problem,
        _field(jr.key(4)),
        optax.adam(1e-3),
        steps=steps,
        key=jr.key(5),
        steps_per_call=10,
        checkpoint=tmp_path / "ckpt.h5" if checkpoint else None,
        checkpoint_every=10 if checkpoint else None,
        progress=False,
    )
    # With checkpoints, the guard that checks the next loss before each write is
    # traced once too, however many checkpoints are written (3 here).
    assert len(_TRACES) == expected


def test_caller_field_is_not_donated():
    problem = make_toy_problem(n=32)
    field = _field(jr.key(6))
    sciinr.fit(problem, field, optax.adam(1e-3), steps=5, key=jr.key(0), progress=False)
    # The caller's arrays are still alive and unchanged.
    assert all(not leaf.is_deleted() for leaf in jtu.tree_leaves(_params(field)))


class _Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted(tmp_path, monkeypatch):
    problem = make_toy_problem(n=64, batch_size=16)
    field = _field(jr.key(7), norm="layer")
    optimizer = optax.adam(optax.exponential_decay(1e-2, 50, 0.5))
    kwargs = dict(steps=100, key=jr.key(8), steps_per_call=10, progress=False)
    reference = sciinr.fit(problem, field, optimizer, eval_every=20, **kwargs)

    path = tmp_path / "ckpt.h5"
    real_save = trainer_module.save_checkpoint
    calls = []

    def save_then_die(*args, **kw):
        real_save(*args, **kw)
        calls.append(kw["step"])
        if len(calls) == 2:
            raise _Killed  # the process dies right after the checkpoint at step 40

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        sciinr.fit(
            problem,
            field,
            optimizer,
            checkpoint=path,
            checkpoint_every=20,
            eval_every=20,
            **kwargs,
        )
    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    assert calls == [20, 40]
    # Resume with fresh templates (a different key: the checkpoint's key wins).
    resumed = sciinr.fit(
        problem,
        _field(jr.key(99), norm="layer"),
        optimizer,
        checkpoint=path,
        checkpoint_every=20,
        eval_every=20,
        resume=True,
        **{**kwargs, "key": jr.key(123)},
    )
    _assert_trees_equal(resumed.field, reference.field)
    for name in ("step", "loss", "mse", "rel_l2"):
        np.testing.assert_array_equal(resumed.history[name], reference.history[name])
    assert resumed.metrics == reference.metrics


def test_resume_mismatch_is_a_clear_error(tmp_path):
    problem = make_toy_problem(n=32)
    path = tmp_path / "ckpt.h5"
    sciinr.fit(
        problem,
        _field(jr.key(0)),
        optax.adam(1e-3),
        steps=10,
        key=jr.key(0),
        steps_per_call=5,
        checkpoint=path,
        progress=False,
    )
    wider = CoordinateMLP(2, 1, 32, 2, key=jr.key(0))
    with pytest.raises(sciinr.io.CheckpointError, match="shape|structure"):
        sciinr.fit(
            problem,
            wider,
            optax.adam(1e-3),
            steps=20,
            key=jr.key(0),
            steps_per_call=5,
            checkpoint=path,
            resume=True,
            progress=False,
        )


def _first_non_finite(problem, field, optimizer, steps, key):
    """A plain optax loop (not `fit`): the first 1-based step whose loss is not
    finite, and the first whose update makes the parameters non-finite."""
    params, static = eqx.partition(field, eqx.is_inexact_array)
    opt_state = optimizer.init(params)

    @eqx.filter_jit
    def step(params, opt_state, batch):
        loss_fn = lambda p: problem.loss(eqx.combine(p, static), batch)[0]
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, loss

    bad_loss = bad_params = None
    for i in range(steps):
        batch = problem.sample(jr.fold_in(key, i))
        params, opt_state, loss = step(params, opt_state, batch)
        finite = all(bool(jnp.all(jnp.isfinite(x))) for x in jtu.tree_leaves(params))
        if bad_loss is None and not np.isfinite(float(loss)):
            bad_loss = i + 1
        if bad_params is None and not finite:
            bad_params = i + 1
        if bad_loss is not None and bad_params is not None:
            break
    return bad_loss, bad_params


def test_non_finite_loss_names_step_and_term_and_keeps_checkpoint(tmp_path):
    # Plain SGD with a huge step diverges; an independent loop says where.
    problem = make_toy_problem(n=32)
    bad, _ = _first_non_finite(
        problem, _field(jr.key(1)), optax.sgd(300.0), 100, jr.key(0)
    )
    assert bad is not None and bad > 3
    path = tmp_path / "ckpt.h5"
    with pytest.raises(
        sciinr.NonFiniteLossError, match=rf"at step {bad}: term 'mse'"
    ) as info:
        sciinr.fit(
            problem,
            _field(jr.key(1)),
            optax.sgd(300.0),
            steps=100,
            key=jr.key(0),
            steps_per_call=1,
            checkpoint=path,
            checkpoint_every=1,
            progress=False,
        )
    assert info.value.term == "mse" and info.value.step == bad
    # The state after step `bad - 1` has a non-finite next loss, so the last good
    # checkpoint is the one after step `bad - 2`.
    assert f"last good checkpoint (step {bad - 2})" in str(info.value)
    template = _field(jr.key(1))
    like = {
        "field": eqx.filter(template, eqx.is_array),
        "opt_state": optax.sgd(300.0).init(_params(template)),
        "key": jr.key(0),
    }
    ckpt = sciinr.io.load_checkpoint(path, like)
    # The kept state is good: its parameters and the loss of its next step are finite.
    assert ckpt.step == bad - 2
    restored = eqx.combine(
        ckpt.state["field"], eqx.filter(template, eqx.is_array, True)
    )
    batch = problem.sample(jr.fold_in(ckpt.state["key"], ckpt.step))
    assert np.isfinite(float(problem.loss(restored, batch)[0]))
    assert ckpt.history["step"][-1] == bad - 2


def test_non_finite_gradient_is_reported_at_the_update():
    # With SGD(30) an update makes the parameters non-finite while the loss that
    # produced it is still finite; an independent loop says at which step.
    problem = make_toy_problem(n=32)
    bad_loss, bad_params = _first_non_finite(
        problem, _field(jr.key(1)), optax.sgd(30.0), 100, jr.key(0)
    )
    assert bad_params is not None and (bad_loss is None or bad_loss > bad_params)
    with pytest.raises(
        sciinr.NonFiniteLossError, match=f"parameters at step {bad_params}"
    ) as info:
        sciinr.fit(
            problem,
            _field(jr.key(1)),
            optax.sgd(30.0),
            steps=100,
            key=jr.key(0),
            steps_per_call=10,
            progress=False,
        )
    assert info.value.term == "update"


def test_history_records_injected_learning_rate_and_metrics():
    problem = make_toy_problem(n=32)
    schedule = optax.linear_schedule(1e-2, 0.0, 20)
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=schedule)
    result = sciinr.fit(
        problem,
        _field(jr.key(2)),
        optimizer,
        steps=20,
        key=jr.key(0),
        steps_per_call=5,
        log_every=2,
        eval_every=10,
        progress=False,
    )
    h = result.history
    np.testing.assert_array_equal(h["step"], np.arange(2, 21, 2))
    # The learning rate used in update k (1-based) is schedule(k - 1).
    np.testing.assert_allclose(
        h["learning_rate"], 1e-2 * (1 - (h["step"] - 1) / 20), rtol=1e-5
    )
    assert np.isnan(h["rel_l2"][h["step"] == 4]).all()
    assert np.isfinite(h["rel_l2"][np.isin(h["step"], [10, 20])]).all()
    assert np.all(np.diff(h["wall_time"]) >= 0)
    assert np.all(h["steps_per_s"] > 0)


def test_progress_bar_prints(capsys):
    sciinr.fit(
        make_toy_problem(n=32),
        _field(jr.key(3)),
        optax.adam(1e-3),
        steps=20,
        key=jr.key(0),
        steps_per_call=10,
        progress=True,
    )
    err = capsys.readouterr().err
    assert "step 20/20" in err and "steps/s" in err and "loss" in err


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(steps=0), ValueError, "`steps` must be a positive int, got 0"),
        (dict(steps=-5), ValueError, "`steps` must be a positive int, got -5"),
        (dict(steps=2.5), TypeError, "`steps` must be a positive int, got float"),
        (
            dict(steps=10, steps_per_call=0),
            ValueError,
            "`steps_per_call` must be a positive int",
        ),
        (
            dict(steps=100, steps_per_call=10, eval_every=15),
            ValueError,
            r"`eval_every` \(15\) must be a multiple of `steps_per_call` \(10\)",
        ),
        (dict(steps=10, resume=True), ValueError, "`resume=True` needs a `checkpoint`"),
        (
            dict(steps=10, checkpoint_every=5),
            ValueError,
            "`checkpoint_every` was given without a `checkpoint`",
        ),
        (dict(steps=10, log_every=0), ValueError, "`log_every` must be a positive"),
    ],
    ids=[
        "zero-steps",
        "negative-steps",
        "float-steps",
        "zero-steps-per-call",
        "eval-not-multiple",
        "resume-without-checkpoint",
        "checkpoint-every-alone",
        "zero-log-every",
    ],
)
def test_bad_arguments(kwargs, error, match):
    with without_runtime_typechecks(), pytest.raises(error, match=match):
        sciinr.fit(
            make_toy_problem(n=8),
            _field(jr.key(0)),
            optax.adam(1e-3),
            key=jr.key(0),
            progress=False,
            **kwargs,
        )


def test_bad_problem_and_optimizer():
    with without_runtime_typechecks():
        _bad_problem_and_optimizer()


def _bad_problem_and_optimizer():
    with pytest.raises(
        TypeError, match="`problem` must be a `sciinr.AbstractProblem`, got object"
    ):
        sciinr.fit(
            object(), _field(jr.key(0)), optax.adam(1e-3), steps=1, key=jr.key(0)
        )  # pyright: ignore
    with pytest.raises(
        TypeError, match="`optimizer` must be an `optax.GradientTransformation`"
    ):
        sciinr.fit(
            make_toy_problem(n=8),
            _field(jr.key(0)),
            lambda g: g,  # pyright: ignore
            steps=1,
            key=jr.key(0),
        )


def test_mesh_must_be_one_dimensional_and_one_device_mesh_runs():
    mesh = jax.make_mesh((1,), ("data",))
    problem = make_toy_problem(n=30)
    with pytest.raises(ValueError, match="1-D"):
        sciinr.fit(
            problem,
            _field(jr.key(0)),
            optax.adam(1e-3),
            steps=1,
            key=jr.key(0),
            mesh=jax.make_mesh((1, 1), ("a", "b")),
            progress=False,
        )
    result = sciinr.fit(
        problem,
        _field(jr.key(0)),
        optax.adam(1e-3),
        steps=2,
        key=jr.key(0),
        mesh=mesh,
        progress=False,
    )
    assert result.step == 2


_MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import jax, jax.numpy as jnp, jax.random as jr, equinox as eqx, numpy as np, optax
    import jax.tree_util as jtu
    import sciinr
    from sciinr.nn import CoordinateMLP, FourierFeatures, trainable
    from helpers import make_toy_problem

    assert jax.device_count() == 4, jax.devices()
    problem = make_toy_problem(n=64, batch_size=32)
    encoding = FourierFeatures(2, 8, sigma=1.0, key=jr.key(0))
    def make(norm):
        return CoordinateMLP(2, 1, 32, 2, encoding=encoding, linear="rwf", norm=norm,
                             key=jr.key(1))

    def max_diff(a, b):
        a = jtu.tree_leaves(eqx.filter(a, eqx.is_inexact_array))
        b = jtu.tree_leaves(eqx.filter(b, eqx.is_inexact_array))
        return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(a, b))

    # One-step gradients of a batch-norm field (global statistics over the sharded
    # coordinates): 1 device vs the batch sharded over 4, relative to the gradient.
    field = make("batch")
    params, static = eqx.partition(field, trainable(field))
    batch = problem.sample(jr.key(3))
    def loss(p, b):
        return problem.loss(eqx.combine(p, static), b)[0]
    g1 = jax.jit(jax.grad(loss))(params, batch)
    auto = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.sharding.NamedSharding(auto, jax.sharding.PartitionSpec("data"))
    g4 = jax.jit(jax.grad(loss))(params, jax.device_put(batch, sharding))
    scale = max(float(jnp.max(jnp.abs(x))) for x in jtu.tree_leaves(g1))
    grad_err = max_diff(g1, g4) / scale

    # Hundreds of Adam steps through `fit` (jax.make_mesh: Explicit axes).
    mesh = jax.make_mesh((4,), ("data",))
    kwargs = dict(steps=300, key=jr.key(2), steps_per_call=50, progress=False)
    one = sciinr.fit(problem, make(None), optax.adam(3e-3), **kwargs)
    four = sciinr.fit(problem, make(None), optax.adam(3e-3), mesh=mesh, **kwargs)
    param_err = max_diff(one.field, four.field)
    replicated = all(
        len(x.sharding.device_set) == 4 and x.sharding.is_fully_replicated
        for x in jtu.tree_leaves(eqx.filter(four.field, eqx.is_array))
    )
    bn_one = sciinr.fit(problem, make("batch"), optax.adam(3e-3), **kwargs)
    bn_four = sciinr.fit(problem, make("batch"), optax.adam(3e-3), mesh=mesh, **kwargs)
    print("RESULT", grad_err, param_err, replicated,
          one.metrics["rel_l2"], four.metrics["rel_l2"],
          bn_one.metrics["rel_l2"], bn_four.metrics["rel_l2"])

    # Resume on the mesh (restored arrays are moved onto it), with evaluation and
    # checkpoints between chunks: equals the uninterrupted mesh run.
    import os, tempfile
    path = os.path.join(tempfile.mkdtemp(), "ckpt.h5")
    kwargs = dict(key=jr.key(2), steps_per_call=10, eval_every=20, progress=False,
                  mesh=mesh)
    full = sciinr.fit(problem, make("batch"), optax.adam(3e-3), steps=60, **kwargs)
    sciinr.fit(problem, make("batch"), optax.adam(3e-3), steps=40, checkpoint=path,
               checkpoint_every=20, **kwargs)
    resumed = sciinr.fit(problem, make("batch"), optax.adam(3e-3), steps=60,
                         checkpoint=path, checkpoint_every=20, resume=True, **kwargs)
    print("RESUME", max_diff(full.field, resumed.field),
          bool(np.array_equal(full.history["loss"], resumed.history["loss"])),
          bool(np.array_equal(full.history["rel_l2"], resumed.history["rel_l2"],
                              equal_nan=True)))

    # Prediction on the mesh equals the single-device one, and evaluation is sharded:
    # under the mesh context `apply` splits the points over the 4 devices.
    p1 = sciinr.predict(problem, one.field)
    p4 = sciinr.predict(problem, four.field, mesh=mesh)
    bn = bn_four.field
    b1 = sciinr.predict(problem, bn)
    b4 = sciinr.predict(problem, bn, mesh=mesh)
    auto4 = jax.sharding.Mesh(mesh.devices, ("data",),
                              axis_types=(jax.sharding.AxisType.Auto,))
    xs = jnp.linspace(0, 1, 128).reshape(64, 2)
    with jax.set_mesh(auto4):
        out = eqx.filter_jit(lambda f, x: sciinr.nn.apply(f, x, chunk_size=16))(
            one.field, xs)
        whole = eqx.filter_jit(lambda f, x: sciinr.nn.apply(f, x))(one.field, xs)
    print("PREDICT",
          float(np.max(np.abs(p1["prediction"] - p4["prediction"]))),
          float(np.max(np.abs(b1["prediction"] - b4["prediction"]))),
          len(out.sharding.device_set), out.sharding.is_fully_replicated,
          whole.sharding.is_fully_replicated)

    # A batch that does not split over the devices is a clear error.
    try:
        sciinr.fit(make_toy_problem(n=64, batch_size=30), make(None),
                   optax.adam(1e-3), steps=1, key=jr.key(0), mesh=mesh)
    except ValueError as err:
        print("DIVISIBLE", "4 devices" in str(err) and "30 points" in str(err))
    """
)


def test_data_parallel_four_devices_matches_one_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    tests = os.path.dirname(os.path.abspath(__file__))
    script = _MULTI_DEVICE_SCRIPT.format(tests=tests)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    _, grad_err, param_err, replicated, rel1, rel4, bn1, bn4 = line.split()
    assert float(grad_err) < 1e-6  # relative to the largest gradient entry
    assert float(param_err) < 1e-5  # after 300 Adam steps
    assert replicated == "True"
    assert abs(float(rel1) - float(rel4)) < 1e-5
    # With batch norm, the linear biases and RWF scales before each norm have zero
    # gradient in exact arithmetic, so Adam turns float noise into drift in those
    # (function-invariant) directions; the function itself must agree.
    assert abs(float(bn1) - float(bn4)) < 1e-4
    resume = next(l for l in proc.stdout.splitlines() if l.startswith("RESUME"))
    assert resume.split()[1:] == ["0.0", "True", "True"], resume
    assert "DIVISIBLE True" in proc.stdout
    predict = next(l for l in proc.stdout.splitlines() if l.startswith("PREDICT"))
    _, err, bn_err, devices, replicated_chunks, replicated_whole = predict.split()
    # Float reassociation only: the same function evaluated on sharded points.
    assert float(err) < 1e-5 and float(bn_err) < 1e-5
    assert devices == "4" and replicated_chunks == "False"
    assert replicated_whole == "False"


def test_fit_writes_run_file(tmp_path):
    problem = make_toy_problem(n=32)
    field = _field(jr.key(9))
    path = tmp_path / "run.h5"
    result = sciinr.fit(
        problem,
        field,
        optax.adam(1e-2),
        steps=20,
        key=jr.key(0),
        steps_per_call=10,
        eval_every=10,
        output=path,
        config={"seed": 7, "note": "toy"},
        progress=False,
    )
    run = sciinr.io.load_run(path, field=_field(jr.key(1)))
    assert run.metrics == pytest.approx(result.metrics)
    assert run.config["seed"] == 7 and run.config["note"] == "toy"
    assert run.config["fit"]["steps"] == 20 and run.config["fit"]["eval_every"] == 10
    for name, values in result.history.items():
        np.testing.assert_array_equal(run.history[name], values)
    assert run.predictions["prediction"].shape == (8, 8, 1)
    np.testing.assert_allclose(run.coordinates["x"], np.arange(8) / 8)
    xs = problem.coords
    np.testing.assert_array_equal(
        sciinr.nn.apply(run.field, xs), sciinr.nn.apply(result.field, xs)
    )


def test_resume_past_steps_is_a_clear_error_and_equal_steps_is_a_no_op(tmp_path):
    problem = make_toy_problem(n=32)
    path = tmp_path / "ckpt.h5"
    kwargs = dict(key=jr.key(0), steps_per_call=5, checkpoint=path, progress=False)
    done = sciinr.fit(problem, _field(jr.key(0)), optax.adam(1e-3), steps=20, **kwargs)
    with pytest.raises(ValueError, match="step 20, past `steps=10`"):
        sciinr.fit(
            problem,
            _field(jr.key(0)),
            optax.adam(1e-3),
            steps=10,
            resume=True,
            **kwargs,
        )
    again = sciinr.fit(
        problem, _field(jr.key(0)), optax.adam(1e-3), steps=20, resume=True, **kwargs
    )
    _assert_trees_equal(again.field, done.field)
    np.testing.assert_array_equal(again.history["loss"], done.history["loss"])
    assert again.metrics == done.metrics


@pytest.mark.parametrize("precision", ["float32", "tensorfloat32"])
def test_matmul_precision_runs(precision):
    result = sciinr.fit(
        make_toy_problem(n=16),
        _field(jr.key(0)),
        optax.adam(1e-3),
        steps=10,
        key=jr.key(0),
        steps_per_call=5,
        matmul_precision=precision,
        progress=False,
    )
    assert result.step == 10 and np.isfinite(result.metrics["rel_l2"])
    assert result.history["step"][-1] == 10


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import jax.random as jr, optax
    import sciinr, sciinr._trainer._checkpointer as trainer
    from helpers import make_toy_problem
    from test_trainer import _field

    real_save = trainer.save_checkpoint
    calls = []
    def save_then_die(*args, **kwargs):
        calls.append(kwargs["step"])
        if len(calls) == 3:
            # Killed in the middle of writing the third checkpoint: the temporary
            # file exists, the rename has not happened.
            import h5py
            h5py.File(str(args[0]) + ".partial.tmp", "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(*args, **kwargs)
    trainer.save_checkpoint = save_then_die
    sciinr.fit(make_toy_problem(n=64, batch_size=16), _field(jr.key(7), norm="layer"),
               optax.adam(1e-2), steps=100, key=jr.key(8), steps_per_call=10,
               checkpoint={path!r}, checkpoint_every=20, eval_every=20,
               progress=False)
    """
)


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    path = tmp_path / "ckpt.h5"
    tests = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT.format(tests=tests, path=str(path))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]  # died by SIGKILL
    with h5py.File(path, "r") as f:  # the last completed checkpoint survived intact
        assert int(f.attrs["step"]) == 40
    problem = make_toy_problem(n=64, batch_size=16)
    kwargs = dict(steps=100, steps_per_call=10, eval_every=20, progress=False)
    reference = sciinr.fit(
        problem,
        _field(jr.key(7), norm="layer"),
        optax.adam(1e-2),
        key=jr.key(8),
        **kwargs,
    )
    resumed = sciinr.fit(
        problem,
        _field(jr.key(7), norm="layer"),
        optax.adam(1e-2),
        key=jr.key(8),
        checkpoint=path,
        checkpoint_every=20,
        resume=True,
        **kwargs,
    )
    _assert_trees_equal(resumed.field, reference.field)
    for name in ("step", "loss", "mse", "rel_l2"):
        np.testing.assert_array_equal(resumed.history[name], reference.history[name])

"""`fit`: the one jitted, scanned trainer that every problem shares."""

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._checks import check_positive_int
from ._problem import AbstractProblem
from .io import load_checkpoint, save_checkpoint, save_run
from .nn import trainable


class NonFiniteLossError(FloatingPointError):
    """Raised by [`sciinr.fit`][] when the loss (or one of its terms) is NaN or inf.

    Attributes `step` (the 1-based update whose loss was non-finite) and `term` (the
    name of the first non-finite term, or `"loss"`).
    """

    def __init__(self, message: str, *, step: int, term: str):
        super().__init__(message)
        self.step = step
        self.term = term


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What [`sciinr.fit`][] returns.

    - `field`: the trained field.
    - `opt_state`: the final optimizer state (to continue training).
    - `history`: a dict of 1-D NumPy arrays aligned with `history["step"]` (the number
      of completed updates): `loss` and its named terms (the loss of the update that
      ended at that step), the metrics of `problem.evaluate` (NaN at steps where it
      was not evaluated), injected hyperparameters such as `learning_rate` (when the
      optimizer was built with `optax.inject_hyperparams`), `wall_time` (seconds since
      the start of the run, measured when the step's chunk finished, compilation
      included) and `steps_per_s` (of that chunk).
    - `metrics`: `problem.evaluate(field)` at the end, as Python floats.
    - `step`: the number of completed updates.
    """

    field: PyTree
    opt_state: PyTree
    history: dict[str, np.ndarray]
    metrics: dict[str, float]
    step: int


# ---------------------------------------------------------------------------------
# The compiled pieces. Everything on the hot path is inside `_run_chunk`: sampling,
# loss, gradient and optimizer update for `length` steps, as one `lax.scan`.


def _injected_hyperparams(opt_state: PyTree) -> dict[str, Array]:
    """Scalar hyperparameters of `optax.inject_hyperparams` states in `opt_state`."""
    found: dict[str, Array] = {}
    is_inject = lambda x: isinstance(
        x, optax.InjectHyperparamsState | optax.InjectStatefulHyperparamsState
    )
    for node in jtu.tree_leaves(opt_state, is_leaf=is_inject):
        if is_inject(node):
            for name, value in node.hyperparams.items():
                if eqx.is_array(value) and jnp.ndim(value) == 0:
                    found.setdefault(name, value)
    return found


@eqx.filter_jit(donate="all-except-first")
def _run_chunk(constants, carry, start, *, length: int):
    problem, static, optimizer, key, data_sharding = constants
    params, opt_state = carry

    def loss_fn(p, batch):
        return problem.loss(eqx.combine(p, static), batch)

    def body(carry, i):
        params, opt_state = carry
        step = start + i
        batch = problem.sample(jr.fold_in(key, step))
        if data_sharding is not None:
            batch = jtu.tree_map(
                lambda x: jax.lax.with_sharding_constraint(x, data_sharding), batch
            )
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        # Third-party optimizers (optax's Adam bias correction: float ** int32 count)
        # are not written for `jax_numpy_dtype_promotion="strict"`; shield them so
        # that users (and our tests) can run our own code under strict promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
        params = eqx.apply_updates(params, updates)
        # After the update, injected hyperparameters are the ones it used.
        hyper = _injected_hyperparams(opt_state)
        return (params, opt_state), (loss, terms, hyper)

    return jax.lax.scan(body, (params, opt_state), jnp.arange(length))


@eqx.filter_jit
def _evaluate(problem, field):
    return problem.evaluate(field)


@eqx.filter_jit
def _predict(problem, field):
    return problem.predict(field)


# ---------------------------------------------------------------------------------
# Host-side bookkeeping.


class _History:
    """Rows keyed by step; columns filled with NaN where a value was not recorded."""

    def __init__(self, initial: Mapping[str, np.ndarray] | None = None):
        self.rows: dict[int, dict[str, float]] = {}
        if initial:
            steps = np.asarray(initial["step"])
            for index, step in enumerate(steps):
                row = {
                    name: float(values[index])
                    for name, values in initial.items()
                    if name != "step" and not np.isnan(values[index])
                }
                self.rows[int(step)] = row

    def record(self, step: int, values: Mapping[str, float]) -> None:
        self.rows.setdefault(step, {}).update(values)

    def last(self, name: str) -> float:
        for step in sorted(self.rows, reverse=True):
            if name in self.rows[step]:
                return self.rows[step][name]
        return 0.0

    def arrays(self) -> dict[str, np.ndarray]:
        steps = sorted(self.rows)
        names: list[str] = []
        for step in steps:
            names.extend(n for n in self.rows[step] if n not in names)
        out = {"step": np.asarray(steps, dtype=np.int64)}
        for name in names:
            out[name] = np.asarray(
                [self.rows[s].get(name, np.nan) for s in steps], dtype=np.float64
            )
        return out


class _Progress:
    """A dependency-free progress line: step, loss, steps/s and ETA."""

    def __init__(self, total: int, start: int, enabled: bool, stream: Any):
        self.total = total
        self.enabled = enabled
        self.stream = stream
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.next_line = start + max(1, total // 10)

    def update(self, step: int, loss: float, rate: float) -> None:
        if not self.enabled:
            return
        eta = (self.total - step) / rate if rate > 0 else math.inf
        eta_text = "?" if not math.isfinite(eta) else f"{eta:5.0f}s"
        width = len(str(self.total))
        text = (
            f"step {step:>{width}}/{self.total}  loss {loss:.4e}  "
            f"{rate:8.1f} steps/s  eta {eta_text}"
        )
        if self.tty:
            self.stream.write("\r" + text)
            self.stream.flush()
        elif step >= self.next_line or step == self.total:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.next_line = step + max(1, self.total // 10)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _to_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in jax.device_get(metrics).items()}


def _check_problem(problem: Any) -> None:
    if not isinstance(problem, AbstractProblem):
        raise TypeError(
            "`problem` must be a `sciinr.AbstractProblem`, got "
            f"{type(problem).__name__}."
        )


def _check_multiple(name: str, value: int, steps_per_call: int) -> None:
    if value % steps_per_call != 0:
        raise ValueError(
            f"`{name}` ({value}) must be a multiple of `steps_per_call` "
            f"({steps_per_call}), because evaluation and checkpoints happen between "
            f"compiled chunks. Use e.g. `{name}={steps_per_call * max(1, round(value / steps_per_call))}` "  # noqa: E501
            f"or a smaller `steps_per_call`."
        )


def _auto_mesh(mesh: Mesh | None) -> Mesh | None:
    """Check `mesh` and return it with `Auto` axis types.

    Data parallelism here is "shard the batch, replicate the rest, let the compiler
    propagate": with `Explicit` axes (the default of `jax.make_mesh` in recent JAX)
    every contraction over the batch would need an explicit output sharding.
    """
    if mesh is None:
        return None
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a `jax.sharding.Mesh`, got {type(mesh)}.")
    if len(mesh.axis_names) != 1:
        raise ValueError(
            "`mesh` must be 1-D (data parallel over one axis), got axes "
            f"{mesh.axis_names}."
        )
    if any(t != AxisType.Auto for t in mesh.axis_types):
        mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,))
    return mesh


def _check_batch(problem: AbstractProblem, key: PRNGKeyArray, mesh: Mesh | None):
    """Check `sample`'s output shapes (abstractly, nothing is computed)."""
    batch = eqx.filter_eval_shape(problem.sample, key)
    leaves = jtu.tree_leaves_with_path(batch)
    if not leaves:
        raise ValueError("`problem.sample(key)` returned no arrays.")
    for path, leaf in leaves:
        if len(leaf.shape) == 0:
            raise ValueError(
                f"`problem.sample(key)` leaf {jtu.keystr(path)!r} is a scalar; every "
                "batch leaf needs a leading batch axis."
            )
        if mesh is not None and leaf.shape[0] % mesh.size != 0:
            raise ValueError(
                f"The batch leaf {jtu.keystr(path)!r} has {leaf.shape[0]} points, "
                f"which does not split evenly over the {mesh.size} devices of `mesh`. "
                "Choose a batch size that is a multiple of the device count."
            )


def _chunks(start: int, steps: int, steps_per_call: int) -> list[tuple[int, int]]:
    """Chunk boundaries on the global grid `k * steps_per_call` (resume-stable)."""
    out = []
    step = start
    while step < steps:
        end = min(steps, (step // steps_per_call + 1) * steps_per_call)
        out.append((step, end - step))
        step = end
    return out


# ---------------------------------------------------------------------------------


def fit(
    problem: AbstractProblem,
    field: PyTree,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    key: PRNGKeyArray,
    steps_per_call: int = 100,
    log_every: int = 1,
    eval_every: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    output: str | os.PathLike | None = None,
    mesh: Mesh | None = None,
    progress: bool = True,
    matmul_precision: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train `field` on `problem` with an optax optimizer.

    One `eqx.filter_jit`-compiled function runs `steps_per_call` training steps per
    dispatch with `jax.lax.scan`: each step draws its batch on device with
    `problem.sample(jr.fold_in(key, step))`, computes `problem.loss` and its gradient
    with respect to the trainable arrays of `field` (see [`sciinr.nn.trainable`][]) and
    applies the optimizer update. The host only logs, evaluates and checkpoints between
    chunks, with one chunk in flight (bounded, so that cross-device reductions are never
    queued without limit). Because the per-step keys depend on
    the global step only, results do not depend on `steps_per_call`.

    **Main arguments:**

    - `problem`: a [`sciinr.AbstractProblem`][].
    - `field`: the field to train (not modified; its arrays are copied).
    - `optimizer`: any `optax.GradientTransformation`, schedules included. Wrap it in
      `optax.inject_hyperparams` to record the learning rate in the history.
    - `steps`: the total number of updates, `> 0`. With `resume=True` this is the
      total including the steps already done.
    - `key`: a JAX PRNG key for the batches.

    **Other arguments:**

    - `steps_per_call`: steps per compiled dispatch. Larger amortises dispatch and
      host work; the last chunk may be shorter (one extra compilation at most).
    - `log_every`: keep every `log_every`-th step's loss terms in the history.
    - `eval_every`: run `problem.evaluate` every this many steps (a multiple of
      `steps_per_call`); `None` evaluates only at the end.
    - `checkpoint`: a file path for atomic checkpoints (field, optimizer state, step,
      key, history).
    - `checkpoint_every`: steps between checkpoints (a multiple of `steps_per_call`);
      defaults to `10 * steps_per_call`. A checkpoint is also written at the end.
    - `resume`: continue from `checkpoint` if it exists. `field`, `optimizer` and `key`
      then serve as templates for the restored state; a mismatch raises
      `sciinr.io.CheckpointError`. The resumed run reproduces the uninterrupted one
      (bit for bit on CPU).
    - `output`: write the HDF5 run file ([`sciinr.io.save_run`][]) here at the end.
    - `mesh`: a 1-D `jax.sharding.Mesh` for data parallelism: every batch leaf is
      sharded over the mesh on its leading axis, parameters, optimizer state and
      problem data are replicated. The same code runs on one CPU, several GPUs or
      several hosts (after `jax.distributed.initialize()`; every process builds the
      same problem and field, and only process 0 writes files).
    - `progress`: print a progress line (loss, steps/s, ETA) to stderr.
    - `matmul_precision`: passed to `jax.default_matmul_precision` while compiling,
      e.g. `"tensorfloat32"` on GPUs; `None` keeps JAX's default.
    - `config`: a JSON-serialisable dict (e.g. the command-line arguments) stored in
      the run file and the checkpoint, next to the trainer settings under `"fit"`.

    **Returns:**

    A [`sciinr.FitResult`][].

    **Raises:**

    - `sciinr.NonFiniteLossError` if a loss term becomes NaN or inf; it names the step
      and the term. The last checkpoint written before (if any) is kept.
    - `ValueError` / `TypeError` for invalid arguments.
    """
    _check_problem(problem)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "`optimizer` must be an `optax.GradientTransformation`, got "
            f"{type(optimizer).__name__}."
        )
    steps = check_positive_int("steps", steps)
    steps_per_call = min(check_positive_int("steps_per_call", steps_per_call), steps)
    log_every = check_positive_int("log_every", log_every)
    if eval_every is not None:
        eval_every = check_positive_int("eval_every", eval_every)
        _check_multiple("eval_every", eval_every, steps_per_call)
    if checkpoint is None:
        if resume:
            raise ValueError("`resume=True` needs a `checkpoint` path to resume from.")
        if checkpoint_every is not None:
            raise ValueError("`checkpoint_every` was given without a `checkpoint`.")
    else:
        if checkpoint_every is None:
            checkpoint_every = 10 * steps_per_call
        checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
        _check_multiple("checkpoint_every", checkpoint_every, steps_per_call)
    mesh = _auto_mesh(mesh)
    data_sharding = (
        None if mesh is None else NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    )
    _check_batch(problem, key, mesh)
    fit_config = {
        "steps": steps,
        "steps_per_call": steps_per_call,
        "log_every": log_every,
        "eval_every": eval_every,
        "checkpoint_every": checkpoint_every,
        "devices": 1 if mesh is None else int(mesh.size),
        "matmul_precision": matmul_precision,
    }
    config = {**(dict(config) if config else {}), "fit": fit_config}

    precision = (
        jax.default_matmul_precision(matmul_precision)
        if matmul_precision is not None
        else contextlib.nullcontext()
    )
    start = 0
    history = _History()
    wall_offset = 0.0
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        # The checkpoint holds every array of the field (buffers such as a fixed
        # Fourier matrix included); `field` and `key` only give the structure.
        like = {
            "field": eqx.filter(field, eqx.is_array),
            "opt_state": optimizer.init(eqx.filter(field, trainable(field))),
            "key": key,
        }
        restored = load_checkpoint(checkpoint, like)
        field = eqx.combine(
            restored.state["field"], eqx.filter(field, eqx.is_array, inverse=True)
        )
        opt_state = restored.state["opt_state"]
        key = restored.state["key"]
        start = int(restored.step)
        history = _History(restored.history)
        wall_offset = history.last("wall_time")
        params, static = eqx.partition(field, trainable(field))
    else:
        params, static = eqx.partition(field, trainable(field))
        opt_state = optimizer.init(params)
    # Copy so that donating the carry never invalidates the caller's arrays.
    params = jtu.tree_map(jnp.copy, params)
    if mesh is not None:
        replicated = NamedSharding(mesh, PartitionSpec())
        params, opt_state, static, problem = eqx.filter_shard(
            (params, opt_state, static, problem), replicated
        )

    constants = (problem, static, optimizer, key, data_sharding)
    carry = (params, opt_state)
    bar = _Progress(steps, start, progress, sys.stderr)
    t0 = time.perf_counter() - wall_offset
    t_last = time.perf_counter()
    last_checkpoint = start

    def process(outputs, chunk_start: int, length: int) -> None:
        """Pull one chunk's per-step outputs to the host, check and record them."""
        nonlocal t_last
        loss, terms, hyper = jax.device_get(outputs)
        now = time.perf_counter()
        rate = length / max(now - t_last, 1e-9)
        t_last = now
        columns = {"loss": np.asarray(loss)}
        columns.update({name: np.asarray(v) for name, v in terms.items()})
        for name, values in columns.items():
            bad = ~np.isfinite(values)
            if bad.any():
                index = int(np.argmax(bad))
                step = chunk_start + index + 1
                term = next(
                    (
                        n
                        for n, v in columns.items()
                        if n != "loss" and not np.isfinite(v[index])
                    ),
                    "loss",
                )
                kept = (
                    f" The last good checkpoint (step {last_checkpoint}) is kept at "
                    f"{os.fspath(checkpoint)!r}."
                    if checkpoint is not None and last_checkpoint > 0
                    else ""
                )
                raise NonFiniteLossError(
                    f"Non-finite loss at step {step}: term {term!r} = "
                    f"{columns[term][index]} (loss = {columns['loss'][index]})."
                    f"{kept} Lower the learning rate, check the data, or clip "
                    "gradients (optax.clip_by_global_norm).",
                    step=step,
                    term=term,
                )
        columns.update({name: np.asarray(v) for name, v in hyper.items()})
        for index in range(length):
            step = chunk_start + index + 1
            if step % log_every == 0 or step == steps:
                row = {name: float(v[index]) for name, v in columns.items()}
                row["wall_time"] = now - t0
                row["steps_per_s"] = rate
                history.record(step, row)
        bar.update(chunk_start + length, float(columns["loss"][-1]), rate)

    try:
        for chunk_start, length in _chunks(start, steps, steps_per_call):
            end = chunk_start + length
            with precision:
                carry, outputs = _run_chunk(
                    constants, carry, jnp.asarray(chunk_start), length=length
                )
            # The only host sync: this chunk's per-step losses (one chunk in flight).
            process(outputs, chunk_start, length)
            if eval_every is not None and end % eval_every == 0:
                with precision:
                    metrics = _evaluate(problem, eqx.combine(carry[0], static))
                history.record(end, _to_floats(metrics))
            if checkpoint is not None and (end % checkpoint_every == 0 or end == steps):
                save_checkpoint(
                    checkpoint,
                    {
                        "field": eqx.filter(
                            eqx.combine(carry[0], static), eqx.is_array
                        ),
                        "opt_state": carry[1],
                        "key": key,
                    },
                    step=end,
                    history=history.arrays(),
                    meta={"config": config},
                )
                last_checkpoint = end
    finally:
        bar.close()

    params, opt_state = carry
    field = eqx.combine(params, static)
    with precision:
        metrics = _to_floats(_evaluate(problem, field))
    if steps in history.rows:
        history.record(steps, metrics)
    history_arrays = history.arrays()
    if output is not None:
        with precision:
            predictions = _predict(problem, field)
        save_run(
            output,
            field,
            history=history_arrays,
            metrics=metrics,
            predictions=jax.device_get(predictions),
            coordinates=jax.device_get(problem.coordinates()),
            config=config,
            problem=type(problem).__qualname__,
            seed=config.get("seed"),
        )
    return FitResult(
        field=field,
        opt_state=opt_state,
        history=history_arrays,
        metrics=metrics,
        step=steps,
    )

"""`fit`: the one jitted, scanned trainer that every problem shares."""

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, NoReturn

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
    - `opt_state`: the final optimizer state. (To continue a run, use `checkpoint=`
      and `resume=True`: that also restores the step, the key and the history.)
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


def _batch(problem, key, step, data_sharding):
    """The batch of update `step + 1`: drawn on device, sharded on a mesh."""
    batch = problem.sample(jr.fold_in(key, step))
    if data_sharding is not None:
        batch = jtu.tree_map(
            lambda x: jax.lax.with_sharding_constraint(x, data_sharding), batch
        )
    return batch


@eqx.filter_jit(donate="all-except-first")
def _run_chunk(constants, carry, start, *, length: int):
    problem, static, optimizer, key, data_sharding = constants
    params, opt_state = carry

    def loss_fn(p, batch):
        return problem.loss(eqx.combine(p, static), batch)

    def body(carry, i):
        params, opt_state = carry
        batch = _batch(problem, key, start + i, data_sharding)
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        # Third-party optimizers (optax's Adam bias correction: float ** int32 count)
        # are not written for `jax_numpy_dtype_promotion="strict"`; shield them so
        # that users (and our tests) can run our own code under strict promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
        params = eqx.apply_updates(params, updates)
        # After the update, injected hyperparameters are the ones it used.
        hyper = _injected_hyperparams(opt_state)
        finite = jtu.tree_reduce(
            jnp.logical_and,
            jtu.tree_map(lambda x: jnp.all(jnp.isfinite(x)), params),
            jnp.array(True),
        )
        return (params, opt_state), (loss, terms, hyper, finite)

    return jax.lax.scan(body, (params, opt_state), jnp.arange(length))


@eqx.filter_jit
def _next_loss(problem, field, key, step, data_sharding):
    """The loss terms that update `step + 1` will compute (checkpoint guard)."""
    loss, terms = problem.loss(field, _batch(problem, key, step, data_sharding))
    return {"loss": loss, **terms}


@eqx.filter_jit
def _evaluate(problem, field):
    return problem.evaluate(field)


@eqx.filter_jit
def _predict(problem, field):
    return problem.predict(field)


# ---------------------------------------------------------------------------------
# Host-side bookkeeping.


class _History:
    """The run's history: dense blocks of per-step columns plus sparse metrics.

    Per-step columns arrive one chunk at a time as NumPy blocks (no per-step Python
    work); metrics arrive at evaluation steps. `arrays()` aligns everything on the
    sorted union of steps, with NaN where a column has no value.
    """

    def __init__(self, initial: Mapping[str, np.ndarray] | None = None):
        self.blocks: list[dict[str, np.ndarray]] = []
        self.points: dict[int, dict[str, float]] = {}
        if initial and len(initial.get("step", ())):
            self.blocks.append({k: np.asarray(v) for k, v in initial.items()})

    def add_block(self, block: Mapping[str, np.ndarray]) -> None:
        if len(block["step"]):
            self.blocks.append(dict(block))

    def add_point(self, step: int, values: Mapping[str, float]) -> None:
        self.points.setdefault(step, {}).update(values)

    def last(self, name: str) -> float:
        for block in reversed(self.blocks):
            values = block.get(name)
            if values is not None and np.isfinite(values).any():
                return float(values[np.isfinite(values)][-1])
        return 0.0

    def arrays(self) -> dict[str, np.ndarray]:
        dense = [b["step"] for b in self.blocks]
        steps = np.union1d(
            np.concatenate(dense) if dense else np.zeros(0, np.int64),
            np.asarray(sorted(self.points), dtype=np.int64),
        ).astype(np.int64)
        names: list[str] = []
        for source in [*self.blocks, *self.points.values()]:
            names.extend(n for n in source if n != "step" and n not in names)
        out = {"step": steps}
        for name in names:
            column = np.full(len(steps), np.nan)
            for block in self.blocks:
                if name in block:
                    column[np.searchsorted(steps, block["step"])] = block[name]
            for step, values in self.points.items():
                if name in values:
                    column[np.searchsorted(steps, step)] = values[name]
            out[name] = column
        # Consolidate, so that repeated calls (one per checkpoint) stay cheap.
        self.blocks, self.points = ([out] if len(steps) else []), {}
        return dict(out)


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
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        # The checkpoint holds every array of the field (buffers such as a fixed
        # Fourier matrix included); `field` and `key` only give the structure.
        like = {
            "field": eqx.filter(field, eqx.is_array),
            "opt_state": optimizer.init(eqx.filter(field, trainable(field))),
            "key": key,
        }
        restored = load_checkpoint(checkpoint, like)
        start = int(restored.step)
        if start > steps:
            raise ValueError(
                f"The checkpoint {os.fspath(checkpoint)!r} is at step {start}, past "
                f"`steps={steps}` (with `resume=True`, `steps` counts every step, "
                "including those already done). Pass `steps >= "
                f"{start}`."
            )
        field = eqx.combine(
            restored.state["field"], eqx.filter(field, eqx.is_array, inverse=True)
        )
        params, static = eqx.partition(field, trainable(field))
        opt_state = restored.state["opt_state"]
        key = restored.state["key"]
        history = _History(restored.history)
    else:
        params, static = eqx.partition(field, trainable(field))
        opt_state = optimizer.init(params)
    # Copy so that donating the carry never invalidates the caller's arrays.
    params, opt_state = jtu.tree_map(jnp.copy, (params, opt_state))
    if mesh is not None:
        # `device_put` (not a jitted reshard) also moves arrays that are committed to
        # one device, such as a restored checkpoint's.
        replicated = NamedSharding(mesh, PartitionSpec())
        params, opt_state, static, problem, key = jtu.tree_map(
            lambda x: jax.device_put(x, replicated) if eqx.is_array(x) else x,
            (params, opt_state, static, problem, key),
        )

    constants = (problem, static, optimizer, key, data_sharding)
    carry = (params, opt_state)
    bar = _Progress(steps, start, progress, sys.stderr)
    t0 = time.perf_counter() - history.last("wall_time")
    t_last = time.perf_counter()
    last_checkpoint = start  # 0 for a fresh run

    def fail(step: int, term: str, what: str, detail: str) -> NoReturn:
        kept = (
            f" The last good checkpoint (step {last_checkpoint}) is kept at "
            f"{os.fspath(checkpoint)!r}."
            if checkpoint is not None and last_checkpoint > 0
            else ""
        )
        raise NonFiniteLossError(
            f"Non-finite {what} at step {step}: {detail}.{kept} Lower the learning "
            "rate, check the data, or clip gradients (optax.clip_by_global_norm).",
            step=step,
            term=term,
        )

    def process(outputs, chunk_start: int, length: int) -> None:
        """Pull one chunk's per-step outputs to the host, check and record them."""
        nonlocal t_last
        loss, terms, hyper, finite = jax.device_get(outputs)
        now = time.perf_counter()
        rate = length / max(now - t_last, 1e-9)
        t_last = now
        columns = {"loss": np.asarray(loss)}
        columns.update({name: np.asarray(v) for name, v in terms.items()})
        bad_loss = ~np.all([np.isfinite(v) for v in columns.values()], axis=0)
        bad_update = ~np.asarray(finite)
        if bad_loss.any() or bad_update.any():
            index = int(np.argmax(bad_loss | bad_update))  # the first bad step
            if bad_loss[index]:
                term = next(
                    (
                        n
                        for n, v in columns.items()
                        if n != "loss" and not np.isfinite(v[index])
                    ),
                    "loss",
                )
                fail(
                    chunk_start + index + 1,
                    term,
                    "loss",
                    f"term {term!r} = {columns[term][index]} "
                    f"(loss = {columns['loss'][index]})",
                )
            fail(
                chunk_start + index + 1,
                "update",
                "parameters",
                "the update made them NaN or inf although the loss was finite (a "
                "non-finite gradient)",
            )
        step = np.arange(chunk_start + 1, chunk_start + length + 1)
        keep = (step % log_every == 0) | (step == steps)
        block = {"step": step[keep]}
        block.update({name: v[keep] for name, v in columns.items()})
        block.update({name: np.asarray(v)[keep] for name, v in hyper.items()})
        block["wall_time"] = np.full(keep.sum(), now - t0)
        block["steps_per_s"] = np.full(keep.sum(), rate)
        history.add_block(block)
        bar.update(chunk_start + length, float(columns["loss"][-1]), rate)

    metrics: dict[str, float] = {}
    evaluated_at = -1
    try:
        for chunk_start, length in _chunks(start, steps, steps_per_call):
            end = chunk_start + length
            with precision:
                carry, outputs = _run_chunk(
                    constants, carry, jnp.asarray(chunk_start), length=length
                )
            # The only host sync: this chunk's per-step losses (one chunk in flight).
            process(outputs, chunk_start, length)
            field = eqx.combine(carry[0], static)
            if eval_every is not None and end % eval_every == 0:
                with precision:
                    metrics = _to_floats(_evaluate(problem, field))
                history.add_point(end, metrics)
                evaluated_at = end
            if checkpoint is not None and (end % checkpoint_every == 0 or end == steps):
                if end < steps:
                    # Only a state whose next loss is finite counts as good.
                    with precision:
                        upcoming = _to_floats(
                            _next_loss(
                                problem, field, key, jnp.asarray(end), data_sharding
                            )
                        )
                    bad = [n for n, v in upcoming.items() if not math.isfinite(v)]
                    if bad:
                        term = next((n for n in bad if n != "loss"), "loss")
                        fail(end + 1, term, "loss", f"term {term!r} = {upcoming[term]}")
                save_checkpoint(
                    checkpoint,
                    {
                        "field": eqx.filter(field, eqx.is_array),
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
    if evaluated_at != steps:
        with precision:
            metrics = _to_floats(_evaluate(problem, field))
        history.add_point(steps, metrics)
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

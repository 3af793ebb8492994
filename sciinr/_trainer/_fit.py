"""`fit`: the one jitted, scanned trainer that every problem shares.

`fit` is a short orchestration of named pieces: the settings (`_settings.py`), the
state, started fresh or restored from a checkpoint (`_state.py`), the checkpointer
(`_checkpointer.py`), the loop (`_loop.py`) around the compiled chunk
(`_compiled.py`), and the run file (`sciinr.io`).
"""

import contextlib
import dataclasses
import os
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import PRNGKeyArray, PyTree

from .._problem import AbstractProblem
from ..io import save_run
from . import _compiled
from ._checkpointer import Checkpointer
from ._history import Progress
from ._loop import to_floats, train
from ._multihost import (
    barrier,
    check_same,
    fetch,
    local,
    process_count,
    replicate,
)
from ._settings import auto_mesh, check_problem, make_settings
from ._state import init_or_resume, place


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
    - `problem_state`: the problem's state at the end (`None` for stateless
      problems).
    - `history` also holds the scalar entries of the problem state at every logged
      step, named by their key paths joined with `_` (`{"weight": {"ic": w}}` gives
      `weight_ic`).
    - `metrics`: `problem.evaluate(field)` at the end, as Python floats.
    - `step`: the number of completed updates.
    """

    field: PyTree
    opt_state: PyTree
    problem_state: PyTree
    history: dict[str, np.ndarray]
    metrics: dict[str, float]
    step: int


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
    `problem.sample(jr.fold_in(key, step))`, updates the problem's state if it has one
    (`problem.update_state`), computes `problem.loss` and its gradient with respect to
    the trainable arrays of `field` (see [`sciinr.nn.trainable`][]) and applies the
    optimizer update. The host only logs, evaluates and checkpoints between
    chunks, with one chunk in flight (bounded, so that cross-device reductions are never
    queued without limit). Because the per-step keys depend on
    the global step only, results do not depend on `steps_per_call`.

    **Main arguments:**

    - `problem`: a [`sciinr.AbstractProblem`][].
    - `field`: the field to train (not modified; its arrays are copied).
    - `optimizer`: any `optax.GradientTransformation`, schedules included. Wrap it in
      `optax.inject_hyperparams` to record the learning rate in the history.
      `GradientTransformationExtraArgs` receive `value`, `grad` and `value_fn` (the
      loss as a function of the trainable arrays, on the step's batch), so line-search
      methods such as `optax.lbfgs()` work; use them with full-batch problems.
    - `steps`: the total number of updates, `> 0`. With `resume=True` this is the
      total including the steps already done.
    - `key`: a JAX PRNG key for the batches.

    **Other arguments:**

    - `steps_per_call`: steps per compiled dispatch. Larger amortises dispatch and
      host work; the last chunk may be shorter (one extra compilation at most).
    - `log_every`: keep every `log_every`-th step's loss terms in the history.
    - `eval_every`: run `problem.evaluate` every this many steps (a multiple of
      `steps_per_call`); `None` evaluates only at the end.
    - `checkpoint`: a file path for atomic checkpoints (field, optimizer state,
      problem state, step, key, history).
    - `checkpoint_every`: steps between checkpoints (a multiple of `steps_per_call`);
      defaults to `10 * steps_per_call`. A checkpoint is also written at the end.
    - `resume`: continue from `checkpoint` if it exists. `field`, `optimizer` and `key`
      then serve as templates for the restored state; a mismatch raises
      `sciinr.io.CheckpointError`. The resumed run reproduces the uninterrupted one
      (bit for bit on CPU).
    - `output`: write the HDF5 run file ([`sciinr.io.save_run`][]) here at the end.
    - `mesh`: a 1-D `jax.sharding.Mesh` for data parallelism: every batch leaf is
      sharded over the mesh on its leading axis (each device draws only its share),
      parameters, optimizer state and problem data are replicated. The same code
      runs on one CPU, several GPUs or several processes and hosts: after
      [`sciinr.distributed.initialize`][], pass a mesh over `jax.devices()` (all
      processes' devices) and call `fit` identically on every process. Every process
      builds the same problem and field and passes the same `key` (checked: a
      `ValueError` names the first array that differs); only process 0 writes the
      checkpoint and the run file; a resumed run restores on every process from the
      shared checkpoint. See the "Scaling out" guide.
    - `progress`: print a progress line (loss, steps/s, ETA) to stderr (on process 0
      only, in a multi-process run).
    - `matmul_precision`: passed to `jax.default_matmul_precision` while compiling,
      e.g. `"tensorfloat32"` on GPUs; `None` keeps JAX's default.
    - `config`: a JSON-serialisable dict (e.g. the command-line arguments) stored in
      the run file and the checkpoint, next to the trainer settings under `"fit"`.

    **Returns:**

    A [`sciinr.FitResult`][].

    **Raises:**

    - `sciinr.NonFiniteLossError` if a loss term becomes NaN or inf; it names the step
      and the term. The last checkpoint written before (if any) is kept. (In a
      multi-process run every process raises it, at the same step: the loss is
      reduced over the whole batch and replicated.)
    - `ValueError` / `TypeError` for invalid arguments, and when the processes of a
      multi-process run do not hold the same problem, field, key or checkpoint.
    """
    settings = make_settings(
        problem,
        optimizer,
        key,
        steps=steps,
        steps_per_call=steps_per_call,
        log_every=log_every,
        eval_every=eval_every,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        mesh=mesh,
        progress=progress,
        matmul_precision=matmul_precision,
    )
    config = {**(dict(config) if config else {}), "fit": settings.as_config()}
    state = init_or_resume(problem, field, optimizer, key, settings)
    state, problem = place(state, problem, settings.mesh)
    checkpointer = Checkpointer(settings, config, start=state.step)
    # One progress line per run, not one per process.
    show = settings.progress and jax.process_index() == 0
    bar = Progress(settings.steps, state.step, show, sys.stderr)
    try:
        state, metrics, evaluated_at = train(
            problem, optimizer, state, settings, checkpointer, bar
        )
    finally:
        bar.close()

    field = state.field
    if evaluated_at != settings.steps:
        with settings.compiling():
            metrics = to_floats(_compiled.evaluate(problem, field))
        state.history.add_point(settings.steps, metrics)
    history = state.history.arrays()
    if output is not None:
        with settings.compiling():
            predictions = _compiled.predict(problem, field)
        save_run(
            output,
            field,
            history=history,
            metrics=metrics,
            predictions=fetch(predictions),
            coordinates={
                name: fetch(axis)  # in order: dict pytrees sort their keys
                for name, axis in problem.coordinates().items()
            },
            config=config,
            problem=type(problem).__qualname__,
            seed=config.get("seed"),
        )
        barrier("sciinr run file written")  # only process 0 writes it
    return FitResult(
        field=field,
        opt_state=state.opt_state,
        problem_state=state.problem_state,
        history=history,
        metrics=metrics,
        step=settings.steps,
    )


def evaluate(
    problem: AbstractProblem, field: PyTree, *, mesh: Mesh | None = None
) -> dict[str, float]:
    """`problem.evaluate(field)`, compiled once and shared with [`sciinr.fit`][].

    Called after `fit` with the same problem and the trained field, this reuses the
    compilation that `fit` made. With a 1-D `mesh`, the evaluation points are sharded
    over its devices ([`sciinr.nn.apply`][] reads the mesh from the `jax.set_mesh`
    context that this sets) and the problem's data replicated over it.

    In a multi-process run (`jax.distributed`), calling it with the `mesh` of the
    run is collective: every process must call it. Without a `mesh`, each process
    evaluates alone on its own devices, with its copy of a field that `fit` returned
    replicated over the processes (e.g. on process 0 only, to render a figure).

    **Returns:**

    The metrics, as Python floats.
    """
    check_problem(problem)
    mesh = auto_mesh(mesh)
    with _on_mesh(mesh):
        problem, field = _place((problem, field), mesh)
        return to_floats(_compiled.evaluate(problem, field))


def predict(
    problem: AbstractProblem, field: PyTree, *, mesh: Mesh | None = None
) -> dict[str, np.ndarray]:
    """`problem.predict(field)`, compiled once and shared with [`sciinr.fit`][].

    As [`sciinr.evaluate`][]; returns the predictions as NumPy arrays on the host
    (gathered from every process when `mesh` spans several).
    """
    check_problem(problem)
    mesh = auto_mesh(mesh)
    with _on_mesh(mesh):
        problem, field = _place((problem, field), mesh)
        predictions = fetch(_compiled.predict(problem, field))
    return {name: np.asarray(value) for name, value in predictions.items()}


def _on_mesh(mesh: Mesh | None):
    return contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh)


def _place(tree: PyTree, mesh: Mesh | None) -> PyTree:
    """Replicated over `mesh`; without one, on this process's devices only."""
    if mesh is None:
        return local(tree)
    if process_count(mesh) > 1:
        check_same(tree, "problem or field")
    return replicate(tree, mesh)

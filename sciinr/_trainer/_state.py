"""The training state, started fresh or restored from a checkpoint, and placed."""

import dataclasses
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import PRNGKeyArray, PyTree

from .._problem import AbstractProblem
from ..io import load_checkpoint
from ..nn import trainable
from ._history import History
from ._multihost import check_same, process_count, replicate
from ._settings import Settings


@dataclasses.dataclass
class TrainState:
    """Everything a run carries from one chunk to the next.

    - `params`: the trainable arrays of the field (see `sciinr.nn.trainable`);
      `static` holds the rest (fixed buffers, activations, sizes).
    - `opt_state`: the optimizer state.
    - `problem_state`: the problem's own state (`problem.init_state()`), `None` for
      stateless problems.
    - `key`: the key the batches are drawn from.
    - `step`: the number of completed updates.
    - `history`: what has been recorded so far.
    """

    params: PyTree
    static: PyTree
    opt_state: PyTree
    problem_state: PyTree
    key: PRNGKeyArray
    step: int
    history: History

    @property
    def field(self) -> PyTree:
        return eqx.combine(self.params, self.static)

    @property
    def carry(self) -> tuple[PyTree, PyTree, PyTree]:
        """What the compiled chunk updates: `(params, opt_state, problem_state)`."""
        return self.params, self.opt_state, self.problem_state

    def checkpoint_tree(self) -> dict[str, Any]:
        """What a checkpoint stores. Every array of the field is saved (buffers such
        as a fixed Fourier matrix included); a stateless problem adds no leaves, so
        its checkpoints keep the layout they always had."""
        return {
            "field": eqx.filter(self.field, eqx.is_array),
            "opt_state": self.opt_state,
            "key": self.key,
            "problem_state": self.problem_state,
        }


def init_or_resume(
    problem: AbstractProblem,
    field: PyTree,
    optimizer: optax.GradientTransformation,
    key: PRNGKeyArray,
    settings: Settings,
) -> TrainState:
    """A fresh state, or the one in `settings.checkpoint` when resuming.

    When resuming, `field`, `optimizer`, `key` and `problem.init_state()` only give
    the structure that the checkpoint must match (a mismatch raises
    `sciinr.io.CheckpointError` naming the first differing leaf).
    """
    params, static = eqx.partition(field, trainable(field))
    fresh = TrainState(
        params=params,
        static=static,
        opt_state=optimizer.init(params),
        problem_state=problem.init_state(),
        key=key,
        step=0,
        history=History(),
    )
    path = settings.checkpoint
    if not settings.resume or path is None or not path.exists():
        return fresh
    restored = load_checkpoint(path, fresh.checkpoint_tree())
    if restored.step > settings.steps:
        raise ValueError(
            f"The checkpoint '{path}' is at step {restored.step}, past "
            f"`steps={settings.steps}` (with `resume=True`, `steps` counts every "
            f"step, including those already done). Pass `steps >= {restored.step}`."
        )
    field = eqx.combine(
        restored.state["field"], eqx.filter(field, eqx.is_array, inverse=True)
    )
    params, static = eqx.partition(field, trainable(field))
    return TrainState(
        params=params,
        static=static,
        opt_state=restored.state["opt_state"],
        problem_state=restored.state["problem_state"],
        key=restored.state["key"],
        step=restored.step,
        history=History(restored.history),
    )


def place(
    state: TrainState, problem: AbstractProblem, mesh: Mesh | None
) -> tuple[TrainState, AbstractProblem]:
    """Copy the state's arrays (so that donating them never invalidates the
    caller's) and, on a mesh, replicate them and the problem's data over it.

    On a mesh that spans several processes, the replicated arrays are built on each
    process from its own host copy (never a cross-process transfer), after checking
    that every process holds the same values and step (`ValueError` otherwise).
    """
    arrays = (state.params, state.opt_state, state.problem_state)
    params, opt_state, problem_state = jtu.tree_map(jnp.copy, arrays)
    static, key = state.static, state.key
    if mesh is not None:
        if process_count(mesh) > 1:
            check_same(
                {
                    "step": np.asarray(state.step),
                    "field": (state.params, static),
                    "opt_state": state.opt_state,
                    "problem_state": state.problem_state,
                    "key": key,
                    "problem": problem,
                },
                "training state or problem",
                "Every process must build the same problem and field, pass the same "
                "`key` (the same seed on every process, not one per process) and, "
                "with `resume=True`, read the same checkpoint (on a file system that "
                "every process sees).",
            )
        params, opt_state, problem_state, static, problem, key = replicate(
            (params, opt_state, problem_state, static, problem, key), mesh
        )
    placed = dataclasses.replace(
        state,
        params=params,
        static=static,
        opt_state=opt_state,
        problem_state=problem_state,
        key=key,
    )
    return placed, problem

"""The settings of one `fit` call: validated once, before anything is compiled."""

import contextlib
import dataclasses
import os
import pathlib
from typing import Any

import equinox as eqx
import jax
import jax.tree_util as jtu
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from jaxtyping import PRNGKeyArray

from .._problem import AbstractProblem
from ..checks import check_positive_int
from ._multihost import process_count


@dataclasses.dataclass(frozen=True)
class Settings:
    """How `fit` runs: the validated form of its keyword arguments."""

    steps: int
    steps_per_call: int
    log_every: int
    eval_every: int | None
    checkpoint: pathlib.Path | None
    checkpoint_every: int | None
    resume: bool
    mesh: Mesh | None
    progress: bool
    matmul_precision: str | None

    @property
    def data_sharding(self) -> NamedSharding | None:
        """Batches: sharded over the mesh on their leading axis."""
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, PartitionSpec(self.mesh.axis_names[0]))

    def chunks(self, start: int) -> list[tuple[int, int]]:
        """`(first step, length)` of each dispatch from `start` to `steps`.

        Boundaries lie on the global grid `k * steps_per_call`, so a resumed run
        dispatches the same chunks as an uninterrupted one.
        """
        out = []
        step = start
        while step < self.steps:
            end = min(
                self.steps, (step // self.steps_per_call + 1) * self.steps_per_call
            )
            out.append((step, end - step))
            step = end
        return out

    def evaluates_at(self, step: int) -> bool:
        return self.eval_every is not None and step % self.eval_every == 0

    def checkpoints_at(self, step: int) -> bool:
        if self.checkpoint is None or self.checkpoint_every is None:
            return False
        return step % self.checkpoint_every == 0 or step == self.steps

    def compiling(self) -> contextlib.AbstractContextManager:
        """The context every compiled call runs in: precision and mesh."""
        stack = contextlib.ExitStack()
        if self.matmul_precision is not None:
            stack.enter_context(jax.default_matmul_precision(self.matmul_precision))
        if self.mesh is not None:
            stack.enter_context(jax.set_mesh(self.mesh))
        return stack

    def as_config(self) -> dict[str, Any]:
        """The trainer settings as stored in run files and checkpoints."""
        return {
            "steps": self.steps,
            "steps_per_call": self.steps_per_call,
            "log_every": self.log_every,
            "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every,
            "devices": 1 if self.mesh is None else int(self.mesh.size),
            "processes": process_count(self.mesh),
            "matmul_precision": self.matmul_precision,
        }


def check_problem(problem: Any) -> None:
    if not isinstance(problem, AbstractProblem):
        raise TypeError(
            "`problem` must be a `sciinr.AbstractProblem`, got "
            f"{type(problem).__name__}."
        )


def _check_multiple(name: str, value: int, steps_per_call: int) -> None:
    if value % steps_per_call != 0:
        suggestion = steps_per_call * max(1, round(value / steps_per_call))
        raise ValueError(
            f"`{name}` ({value}) must be a multiple of `steps_per_call` "
            f"({steps_per_call}), because evaluation and checkpoints happen between "
            f"compiled chunks. Use e.g. `{name}={suggestion}` or a smaller "
            "`steps_per_call`."
        )


def auto_mesh(mesh: Any) -> Mesh | None:
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


def check_batch(problem: AbstractProblem, key: PRNGKeyArray, mesh: Mesh | None):
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


def make_settings(
    problem: Any,
    optimizer: Any,
    key: PRNGKeyArray,
    *,
    steps: Any,
    steps_per_call: Any,
    log_every: Any,
    eval_every: Any,
    checkpoint: str | os.PathLike | None,
    checkpoint_every: Any,
    resume: bool,
    mesh: Any,
    progress: bool,
    matmul_precision: str | None,
) -> Settings:
    """Validate `fit`'s arguments; every error names the argument."""
    check_problem(problem)
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
        checkpoint = pathlib.Path(checkpoint)
        if checkpoint_every is None:
            checkpoint_every = 10 * steps_per_call
        checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
        _check_multiple("checkpoint_every", checkpoint_every, steps_per_call)
    mesh = auto_mesh(mesh)
    check_batch(problem, key, mesh)
    return Settings(
        steps=steps,
        steps_per_call=steps_per_call,
        log_every=log_every,
        eval_every=eval_every,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=bool(resume),
        mesh=mesh,
        progress=bool(progress),
        matmul_precision=matmul_precision,
    )

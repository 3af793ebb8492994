"""The problem protocol that `sciinr.fit` trains against."""

import abc

import equinox as eqx
from jaxtyping import Array, Int, PRNGKeyArray, PyTree

from ._custom_types import Scalar


class AbstractProblem(eqx.Module):
    """What to fit: data, a loss, and how to evaluate and render a field.

    A problem is an `eqx.Module` whose data (coordinates, pixels, sensor values, ...)
    are array fields, so they live on device and are traced, not baked into the
    compiled step. [`sciinr.fit`][] calls `sample` and `loss` inside one jitted,
    scanned step, and `evaluate` / `predict` between chunks and at the end.

    Subclasses implement:

    - `sample(key) -> batch`: a pytree of arrays, each with a leading batch axis, drawn
      on device (a full-batch problem returns all of its points). The trainer shards
      every leaf on its leading axis when given a mesh.
    - `loss(field, batch) -> (total, terms)`: the scalar loss and a dict of its named
      terms (scalars), e.g. `{"mse": ...}` or `{"residual": ..., "boundary": ...}`.
    - `evaluate(field) -> metrics`: a dict of scalar metrics (e.g. `psnr_test`).
    - `predict(field) -> arrays`: a dict of named arrays for the run file.
    - `coordinates() -> axes` (optional): a dict of 1-D coordinate arrays; the leading
      axes of each prediction are labelled by them, in order, where lengths match.

    `evaluate` and `predict` should freeze batch-norm statistics on the training
    coordinates first ([`sciinr.nn.freeze_statistics`][]) so that metrics do not
    depend on how evaluation points are chunked, and evaluate large grids with
    `sciinr.nn.apply(..., chunk_size=...)`.

    **Problem state.** A problem may carry state from step to step (loss weights
    balanced by gradient norms, adaptive collocation points, ...). It then overrides

    - `init_state() -> state`: the initial state, a pytree of arrays;
    - `update_state(field, batch, state, step) -> state`: called at the start of every
      training step, before the loss, with the step's batch and the number of
      completed updates `step` (an int32 array: use `jax.lax.cond` or `jnp.where`
      to act every N steps);

    and its `loss` takes the state as a third argument, `loss(field, batch, state)`.
    The trainer carries the state through the scanned steps, checkpoints it and
    restores it bit for bit, and records its scalar entries in the history, named by
    their key paths (`{"weight": {"ic": w}}` gives the column `weight_ic`). Stateless
    problems (`init_state()` returns `None`, the default) keep `loss(field, batch)`
    and pay nothing for the mechanism.
    """

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray) -> PyTree[Array]:
        """Draw one training batch (on device) from `key`."""

    @abc.abstractmethod
    def loss(
        self, field: eqx.Module, batch: PyTree[Array], *state
    ) -> tuple[Scalar, dict[str, Scalar]]:
        """The total loss of `field` on `batch`, and its named terms.

        Problems with state receive it as a third argument (see the class
        docstring)."""

    @abc.abstractmethod
    def evaluate(self, field: eqx.Module) -> dict[str, Scalar]:
        """Scalar metrics of `field` (e.g. `psnr_test`, `rel_l2`)."""

    @abc.abstractmethod
    def predict(self, field: eqx.Module) -> dict[str, Array]:
        """Named arrays rendered by `field`, written to the run file."""

    def coordinates(self) -> dict[str, Array]:
        """1-D coordinate axes of the predictions; none by default."""
        return {}

    def init_state(self) -> PyTree[Array] | None:
        """The initial problem state; `None` (stateless) by default."""
        return None

    def update_state(
        self,
        field: eqx.Module,
        batch: PyTree[Array],
        state: PyTree[Array],
        step: Int[Array, ""],
    ) -> PyTree[Array]:
        """The state for the step that has completed `step` updates; by default
        unchanged."""
        del field, batch, step
        return state

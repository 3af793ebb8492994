"""The problem protocol that `sciinr.fit` trains against."""

import abc

import equinox as eqx
from jaxtyping import Array, PRNGKeyArray, PyTree

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
    depend on how evaluation points are chunked.
    """

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray) -> PyTree[Array]:
        """Draw one training batch (on device) from `key`."""

    @abc.abstractmethod
    def loss(
        self, field: eqx.Module, batch: PyTree[Array]
    ) -> tuple[Scalar, dict[str, Scalar]]:
        """The total loss of `field` on `batch`, and its named terms."""

    @abc.abstractmethod
    def evaluate(self, field: eqx.Module) -> dict[str, Scalar]:
        """Scalar metrics of `field` (e.g. `psnr_test`, `rel_l2`)."""

    @abc.abstractmethod
    def predict(self, field: eqx.Module) -> dict[str, Array]:
        """Named arrays rendered by `field`, written to the run file."""

    def coordinates(self) -> dict[str, Array]:
        """1-D coordinate axes of the predictions; none by default."""
        return {}

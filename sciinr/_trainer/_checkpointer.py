"""Writing checkpoints during a run: only states that can continue are kept."""

import math
from typing import Any

import jax.numpy as jnp

from ..io import save_checkpoint
from . import _compiled
from ._errors import non_finite
from ._multihost import barrier, fetch
from ._settings import Settings
from ._state import TrainState


class Checkpointer:
    """Writes `settings.checkpoint` at the steps `settings` names.

    Before writing a state in the middle of a run it computes the loss that the next
    update will see (one compiled call, traced once per run): a state whose next loss
    is not finite is not "good", so the run stops with `NonFiniteLossError` and the
    previous checkpoint is kept.
    """

    def __init__(self, settings: Settings, config: dict[str, Any], start: int):
        self.settings = settings
        self.config = config
        self.last = start  # the step of the last good checkpoint (0: none)

    def kept(self) -> str:
        """A sentence for error messages: where the last good checkpoint is."""
        if self.settings.checkpoint is None or self.last == 0:
            return ""
        return (
            f" The last good checkpoint (step {self.last}) is kept at "
            f"'{self.settings.checkpoint}'."
        )

    def __call__(self, state: TrainState, problem: Any) -> None:
        """Checkpoint `state` if its step is due."""
        settings = self.settings
        step = state.step
        if settings.checkpoint is None or not settings.checkpoints_at(step):
            return
        if step < settings.steps:
            with settings.compiling():
                upcoming = _compiled.next_loss(
                    problem,
                    state.field,
                    state.problem_state,
                    state.key,
                    jnp.asarray(step),
                    settings.data_sharding,
                )
            upcoming = {k: float(v) for k, v in fetch(upcoming).items()}
            bad = [name for name, v in upcoming.items() if not math.isfinite(v)]
            if bad:
                term = next((name for name in bad if name != "loss"), "loss")
                detail = f"term {term!r} = {upcoming[term]}"
                raise non_finite(step + 1, term, "loss", detail, self.kept())
        save_checkpoint(
            settings.checkpoint,
            state.checkpoint_tree(),
            step=step,
            history=state.history.arrays(),
            meta={"config": self.config},
        )
        barrier("sciinr checkpoint written")  # only process 0 writes it
        self.last = step

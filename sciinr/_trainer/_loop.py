"""The training loop: compiled chunks, and the host work between them."""

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from . import _compiled
from ._checkpointer import Checkpointer
from ._errors import non_finite
from ._history import Progress
from ._multihost import fetch
from ._settings import Settings
from ._state import TrainState


def to_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in fetch(metrics).items()}


class _Recorder:
    """Turns a chunk's per-step outputs into history rows; stops on NaN/inf."""

    def __init__(self, state: TrainState, settings: Settings, kept):
        self.history = state.history
        self.settings = settings
        self.kept = kept  # () -> where the last good checkpoint is, for messages
        self.t0 = time.perf_counter() - state.history.last("wall_time")
        self.t_last = time.perf_counter()

    def __call__(self, outputs, chunk_start: int, length: int) -> tuple[float, float]:
        """Record one chunk (the loop's only host sync).

        Returns the chunk's last loss and its steps per second."""
        loss, terms, hyper, state_scalars, finite = fetch(outputs)
        now = time.perf_counter()
        rate = length / max(now - self.t_last, 1e-9)
        self.t_last = now
        columns = {"loss": np.asarray(loss)}
        columns.update({name: np.asarray(v) for name, v in terms.items()})
        self._check(columns, np.asarray(finite), chunk_start)
        step = np.arange(chunk_start + 1, chunk_start + length + 1)
        keep = (step % self.settings.log_every == 0) | (step == self.settings.steps)
        block = {"step": step[keep]}
        block.update({name: v[keep] for name, v in columns.items()})
        for extra in (hyper, state_scalars):
            block.update({name: np.asarray(v)[keep] for name, v in extra.items()})
        block["wall_time"] = np.full(keep.sum(), now - self.t0)
        block["steps_per_s"] = np.full(keep.sum(), rate)
        self.history.add_block(block)
        return float(columns["loss"][-1]), rate

    def _check(self, columns, finite, chunk_start: int) -> None:
        bad_loss = ~np.all([np.isfinite(v) for v in columns.values()], axis=0)
        bad_update = ~finite
        if not (bad_loss.any() or bad_update.any()):
            return
        index = int(np.argmax(bad_loss | bad_update))  # the first bad step
        step = chunk_start + index + 1
        if bad_loss[index]:
            term = next(
                (
                    n
                    for n, v in columns.items()
                    if n != "loss" and not np.isfinite(v[index])
                ),
                "loss",
            )
            detail = (
                f"term {term!r} = {columns[term][index]} "
                f"(loss = {columns['loss'][index]})"
            )
            raise non_finite(step, term, "loss", detail, self.kept())
        detail = (
            "the update made them NaN or inf although the loss was finite (a "
            "non-finite gradient)"
        )
        raise non_finite(step, "update", "parameters", detail, self.kept())


def train(
    problem: Any,
    optimizer: optax.GradientTransformation,
    state: TrainState,
    settings: Settings,
    checkpointer: Checkpointer,
    progress: Progress,
) -> tuple[TrainState, dict[str, float], int]:
    """Run the chunks from `state.step` to `settings.steps`.

    Between chunks the host records the history, evaluates every `eval_every` steps
    and checkpoints every `checkpoint_every` steps, with one chunk in flight.

    **Returns:**

    The final state, the last metrics and the step at which they were computed
    (`-1` if never).
    """
    constants = (problem, state.static, optimizer, state.key, settings.data_sharding)
    record = _Recorder(state, settings, checkpointer.kept)
    metrics: dict[str, float] = {}
    evaluated_at = -1
    for chunk_start, length in settings.chunks(state.step):
        with settings.compiling():
            carry, outputs = _compiled.run_chunk(
                constants, state.carry, jnp.asarray(chunk_start), length=length
            )
        last_loss, rate = record(outputs, chunk_start, length)
        end = chunk_start + length
        params, opt_state, problem_state = carry
        state = dataclasses.replace(
            state,
            params=params,
            opt_state=opt_state,
            problem_state=problem_state,
            step=end,
        )
        progress.update(end, last_loss, rate)
        if settings.evaluates_at(end):
            with settings.compiling():
                metrics = to_floats(_compiled.evaluate(problem, state.field))
            state.history.add_point(end, metrics)
            evaluated_at = end
        checkpointer(state, problem)
    return state, metrics, evaluated_at

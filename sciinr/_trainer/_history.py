"""Host-side records of a run: the history arrays and the progress line."""

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


class History:
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
        """The last finite value of column `name` (0 if there is none)."""
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


class Progress:
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

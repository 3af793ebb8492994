"""The representation study's cost: a grid cell against a lone `fit`, and the grid.

`examples/encoding_study.py` builds everything that repeats across cells once: the
problem (data on device) per image, one optimizer object per learning rate, and so
one compiled training step, evaluation and prediction per field structure, reused by
every seed (jit caches hit when the problem and field structures repeat). This
measures whether that holds:

1. For each `--variants` model: a lone `sciinr.fit` + `sciinr.predict`, as a user
   would run the model once (a fresh optimizer, so it compiles; twice: first in the
   process, then warm), then the same model as cells of a grid
   (`encoding_study.run_grid`, seeds `0 ... --seeds - 1`): the wall time of every
   cell (train + predict), the XLA compilations it triggered (`jax.monitoring`
   backend-compile events) and the time to add it to the HDF5 file (an atomic
   copy-and-rename of the growing file).
2. The cost of one hidden layer's elementwise functions (relu, exp, tanh, sin,
   cos) against its matmul: what SIREN and Fourier-feature cells pay on CPU.
3. `--project`: every variant of the default grid on one image, seeds 0 and 1, for
   `--steps` steps: the run rate (seed 1, no compilation) and the one-off cost
   (seed 0 minus seed 1), and from them the projected time of the default grid
   (2 images x 32 variants x 3 seeds x 1000 steps).
4. `--from-study FILE`: the same projection from a study file already written by
   `encoding_study.py` (its seed-0 cells of `--image`): per cell, the steady cost of
   its steps from the wall clock in its history (from the end of the first chunk,
   which holds the compilation) and the one-off rest of its wall time. Trains
   nothing.

    python benchmarks/study.py                       # parts 1 and 2, 1000 steps
    python benchmarks/study.py --project --steps 200 # + the projection
    python benchmarks/study.py --variants "" --project --steps 200  # only that
    python benchmarks/study.py --variants "" --from-study study.h5 --image astronaut

Prints the machine, the JAX version and the load average before and after.
"""

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import encoding_study  # noqa: E402
import optax  # noqa: E402

import sciinr  # noqa: E402
from problems.image import ImageRegression  # noqa: E402


COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class Compilations:
    """Counts XLA backend compilations (and their seconds) since the last `take`."""

    def __init__(self):
        self.count, self.seconds = 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if event == COMPILE_EVENT:
            self.count += 1
            self.seconds += duration

    def take(self) -> tuple[int, float]:
        out = (self.count, self.seconds)
        self.count, self.seconds = 0, 0.0
        return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                line.split(":", 1)[1].strip() for line in f if "model name" in line
            )
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, jax {jax.__version__} "
        f"({jax.default_backend()}), load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )


def cpu_seconds() -> float:
    """CPU time of this process (all threads), user + system: on a loaded machine a
    steadier measure of the work than the wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def study_args(flags):
    return encoding_study.parse_args(flags)


def lone_fit(args, variant, image: str, compilations) -> dict:
    """One model trained as a user would: its own problem and optimizer."""
    compilations.take()
    t0, c0 = time.perf_counter(), cpu_seconds()
    problem = ImageRegression(image, size=args.size, protocol=args.protocol)
    field = encoding_study.build(args, variant, problem, encoding_study.field_key(0))
    result = sciinr.fit(
        problem,
        field,
        optax.adam(args.lr),  # a fresh optimizer object: compiles, as a lone run does
        steps=args.steps,
        key=jr.split(jr.key(0))[1],
        steps_per_call=min(args.steps_per_call, args.steps),
        eval_every=args.eval_every,
        progress=False,
    )
    sciinr.predict(problem, result.field)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    count, seconds = compilations.take()
    return {
        "wall": wall,
        "cpu": cpu,
        "compilations": count,
        "compile_s": seconds,
        "psnr_test": result.metrics["psnr_test"],
    }


def grid_cells(args, compilations) -> list[dict]:
    """Run the grid of `args`; per cell: wall (train + predict), compilations, the
    rest of its time (building the field, writing the file), the file size."""
    cells = []
    compilations.take()
    last = [time.perf_counter(), cpu_seconds()]

    def log(line):
        now, cpu = time.perf_counter(), cpu_seconds()
        count, seconds = compilations.take()
        name = line.split("] ", 1)[1].split(":")[0]  # "[ 3/64] <cell>: ..."
        summary = encoding_study.read_summary(args.out)
        row = next(r for r in summary if encoding_study._row_name(r) == name)
        cells.append(
            {
                "cell": name,
                "wall": float(row["wall_time"]),
                "total": now - last[0],
                "cpu_total": cpu - last[1],
                "compilations": count,
                "compile_s": seconds,
                "file_mb": os.path.getsize(args.out) / 2**20,
                "steps_per_s": _steps_per_s(args.out, name),
                "psnr_test": float(row["psnr_test"]),
            }
        )
        last[:] = [time.perf_counter(), cpu_seconds()]

    encoding_study.run_grid(args, log=log)
    return cells


def _steps_per_s(path, name) -> float:
    import h5py

    with h5py.File(path, "r") as f:
        rates = f[f"{name}/history/steps_per_s"][()]
    return float(np.median(rates[len(rates) // 2 :]))


def cell_vs_lone(flags, variants, seeds, compilations) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in variants:
            encoding, linear, norm = name.split("-")
            out = os.path.join(folder, f"{name}.h5")
            args = study_args(
                [*flags, "--images", "camera", "--encodings", encoding,
                 "--linears", linear, "--norms", norm, "--seeds", str(seeds),
                 "--out", out]
            )  # fmt: skip
            variant = encoding_study.variants(args)[0]
            # The first fit of the process also compiles the small eager operations
            # (key splits, optimizer init) that any first run pays; the second one,
            # with another fresh optimizer, is the same model in a warm process.
            lone = lone_fit(args, variant, "camera", compilations)
            warm = lone_fit(args, variant, "camera", compilations)
            cells = grid_cells(args, compilations)
            rows.append({"variant": name, "lone": lone, "warm": warm, "cells": cells})
            for label, run in (("lone fit", lone), ("lone fit, warm", warm)):
                print(
                    f"{name:24s} {label:15s} {run['wall']:6.1f} s wall, "
                    f"{run['cpu']:6.1f} s CPU ({run['compilations']} compilations, "
                    f"{run['compile_s']:.1f} s)",
                    flush=True,
                )
            for cell in cells:
                print(
                    f"  {cell['cell']:36s} cell {cell['total']:6.1f} s wall = "
                    f"{cell['total'] / warm['wall']:5.2f} x warm lone fit, "
                    f"{cell['cpu_total']:6.1f} s CPU = "
                    f"{cell['cpu_total'] / warm['cpu']:5.2f} x; "
                    f"{cell['compilations']:2d} compilations ({cell['compile_s']:.1f} "
                    f"s); of which file update {cell['total'] - cell['wall']:.2f} s "
                    f"({cell['file_mb']:.1f} MB)",
                    flush=True,
                )
    return rows


def elementwise(repeats: int = 20) -> dict:
    """What a SIREN or Fourier-feature step spends on transcendentals: elementwise
    functions on a (4096, 128) float32 array (one hidden layer of a 128^2 Tancik
    cell), against the layer's (4096, 128) x (128, 128) matmul."""
    x = jr.normal(jr.key(0), (4096, 128)) * 10
    w = jr.normal(jr.key(1), (128, 128))
    cases = {
        "matmul x @ W.T": (jax.jit(lambda a: a @ w.T), 2 * 4096 * 128 * 128),
        "relu": (jax.jit(jax.nn.relu), None),
        "exp": (jax.jit(jnp.exp), None),
        "tanh": (jax.jit(jnp.tanh), None),
        "sin": (jax.jit(jnp.sin), None),
        "cos": (jax.jit(jnp.cos), None),
    }
    out = {}
    for name, (f, flops) in cases.items():
        f(x).block_until_ready()
        best = np.inf
        for _ in range(repeats):
            t = time.perf_counter()
            f(x).block_until_ready()
            best = min(best, time.perf_counter() - t)
        out[name] = best
        if flops:
            rate = f"{flops / best / 1e9:7.1f} GFLOP/s"
        else:
            ns = best / x.size * 1e9
            rate = f"{x.size / best / 1e9:7.2f} Gelem/s ({ns:.1f} ns/element)"
        print(f"{name:16s} {best * 1e3:8.3f} ms  {rate}", flush=True)
    return out


def projection(flags, compilations) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "project.h5")
        args = study_args([*flags, "--images", "camera", "--seeds", "2", "--out", out])
        cells = grid_cells(args, compilations)
    by_variant = {}
    for cell in cells:
        variant = cell["cell"].split("/")[1]
        by_variant.setdefault(variant, []).append(cell)
    rows = {}
    for variant, (first, second) in by_variant.items():
        # Per cell of 1000 steps (the cell's whole cost, file update included),
        # and the one-off cost of a variant's first cell (compilation).
        rows[variant] = {
            "wall_per_1000": second["total"] * 1000 / args.steps,
            "cpu_per_1000": second["cpu_total"] * 1000 / args.steps,
            "one_off_wall": first["total"] - second["total"],
            "one_off_cpu": first["cpu_total"] - second["cpu_total"],
        }
    # The default grid: 2 images x 3 seeds x 1000 steps for every variant.
    wall = sum(2 * (r["one_off_wall"] + 3 * r["wall_per_1000"]) for r in rows.values())
    cpu = sum(2 * (r["one_off_cpu"] + 3 * r["cpu_per_1000"]) for r in rows.values())
    print(f"\n{'variant':24s} {'s/1000 steps':>13s} {'CPU s':>7s} {'one-off s':>10s}")
    for variant, r in rows.items():
        print(
            f"{variant:24s} {r['wall_per_1000']:13.1f} {r['cpu_per_1000']:7.1f} "
            f"{r['one_off_wall']:10.1f}"
        )
    print(
        f"projected default grid (192 cells, 1000 steps): {wall / 60:.0f} min wall "
        f"at this load, {cpu / 3600:.2f} CPU-hours",
        flush=True,
    )
    return {"variants": rows, "projected_wall_s": wall, "projected_cpu_s": cpu}


def cell_costs(path: str, image: str | None = None) -> dict[str, dict]:
    """Per finished cell of a study file: its whole wall time (the `wall_time`
    attribute: build, train, evaluate, predict), the steady cost of its steps (the
    history's wall clock from the end of the first chunk, which holds the
    compilation, to the last step, scaled to all steps) and the one-off rest."""
    import h5py

    costs = {}
    with h5py.File(path, "r") as f:
        settings = json.loads(f.attrs["settings"])
        for row in f["summary"][()]:
            if row["status"] != b"done":
                continue
            name = encoding_study._row_name(row)
            if image is not None and not name.startswith(f"{image}/"):
                continue
            history = f[f"{name}/history"]
            step, clock = history["step"][()], history["wall_time"][()]
            first = np.flatnonzero(clock > clock[0])  # the first step of chunk 2
            if not len(first):
                continue
            i = first[0] - 1  # the last step of the first chunk
            steady = (clock[-1] - clock[i]) * step[-1] / (step[-1] - step[i])
            costs[name] = {
                "wall": float(row["wall_time"]),
                "steady": float(steady),
                "one_off": float(row["wall_time"]) - float(steady),
            }
    return {"settings": settings, "cells": costs}


def projection_from_study(path: str, image: str, seeds: int = 3, images: int = 2):
    """Project the default grid from the seed-0 cells of `image` in a study file
    (one-off cost once per variant and image, the steady cost once per seed)."""
    found = cell_costs(path, image)
    cells = {
        name.split("/")[1]: c
        for name, c in found["cells"].items()
        if name.endswith("/seed0")
    }
    steps = found["settings"]["steps"]
    print(f"\n{len(cells)} seed-0 cells of {image} in {path} ({steps} steps each):")
    print(f"{'variant':24s} {'cell s':>8s} {'steady s':>9s} {'one-off s':>10s}")
    for variant, c in cells.items():
        print(f"{variant:24s} {c['wall']:8.1f} {c['steady']:9.1f} {c['one_off']:10.1f}")
    wall = sum(images * (c["one_off"] + seeds * c["steady"]) for c in cells.values())
    measured = sum(c["wall"] for c in cells.values())
    print(
        f"measured: {measured / 60:.1f} min for these {len(cells)} cells; projected "
        f"grid ({images} images x {len(cells)} variants x {seeds} seeds): "
        f"{wall / 60:.0f} min wall at the load of the run",
        flush=True,
    )
    return {
        "cells": cells,
        "measured_wall_s": measured,
        "projected_wall_s": wall,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        default="fourier-dense-none,siren-rwf-batch",
        help='part 1 ("" skips it)',
    )
    parser.add_argument("--seeds", type=int, default=3, help="part 1: grid seeds")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--project", action="store_true", help="run part 3")
    parser.add_argument(
        "--from-study",
        default=None,
        metavar="FILE",
        help="project the default grid from the seed-0 cells of --image in a study "
        "file written by encoding_study.py (trains nothing)",
    )
    parser.add_argument("--image", default="camera", help="with --from-study")
    parser.add_argument("--json", default=None, help="write results here")
    args = parser.parse_args(argv)
    flags = ["--steps", str(args.steps)]
    compilations = Compilations()
    before = machine()
    print(f"# {before}", flush=True)
    results = {"machine_before": before, "steps": args.steps}
    print("\nelementwise cost on one (4096, 128) hidden layer (best of 20):")
    results["elementwise"] = elementwise()
    variants = [v for v in args.variants.split(",") if v]
    if variants:  # `--variants ""` skips it
        results["cells"] = cell_vs_lone(flags, variants, args.seeds, compilations)
    if args.project:
        results["projection"] = projection(flags, compilations)
    if args.from_study:
        results["from_study"] = projection_from_study(args.from_study, args.image)
    after = machine()
    results["machine_after"] = after
    print(f"# {after}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

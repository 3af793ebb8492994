"""PINN throughput: `sciinr.diff` against nested reverse mode, and a full Allen-Cahn
training step against a reverse-mode (jaxpi-style) residual, on ONE CPU core.

1. Derivatives: points/s of d^n u / dx^n (n = 1 ... 4) for a 4 x 256 tanh MLP
   u: R^2 -> R at 4096 points, jitted and vmapped over the points:
   - `sciinr.diff.derivative(..., mode="jvp")` (nested forward mode, the default up
     to order 6) and `mode="taylor"` (`jax.experimental.jet`);
   - nested reverse mode: `jax.grad` of `jax.grad` ... (n levels), and for n = 2
     `jax.hessian` (forward over reverse).
2. The Allen-Cahn training step: `sciinr.fit` on `problems.pinn.AllenCahn1D` with a
   4 x 256 tanh MLP with random weight factorization on a periodic embedding of x
   and 256 Gaussian Fourier features, 4096 (and 1024) collocation points per step,
   causal weighting (32 chunks) and grad-norm weights (refreshed every 1000 steps),
   Adam. The baseline is the same problem and trainer with jaxpi's residual: u_t by
   `jax.grad`, u_xx by `jax.grad(jax.grad)`. The two alternate in the same run;
   steps/s are medians over the repeats, of the steps alone (the difference of a
   long and a short `fit` call: a call's fixed cost is not a step's).

    python benchmarks/pinn.py                      # one core (the default)
    python benchmarks/pinn.py --all-cores --json out.json
    python benchmarks/pinn.py --skip-derivatives --points 4096 1024 --repeats 3

By default the process pins itself to one core (`os.sched_setaffinity`, as `taskset
-c 0`) and sets `XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1"` before importing JAX. The machine, JAX version and
load averages are printed next to the numbers.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all-cores", action="store_true", help="do not pin")
    parser.add_argument("--cpu", type=int, default=0, help="the core to pin to")
    parser.add_argument("--points", type=int, nargs="+", default=[4096, 1024])
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--derivative-points", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3, help="alternations")
    parser.add_argument("--chunks", type=int, default=3, help="timed chunks per fit")
    parser.add_argument("--steps-per-call", type=int, default=10)
    parser.add_argument("--skip-derivatives", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here")
    return parser.parse_args(argv)


ARGS = parse_args()
if not ARGS.all_cores:
    os.sched_setaffinity(0, {ARGS.cpu})
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ).strip()

import math  # noqa: E402

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import sciinr  # noqa: E402
from problems.pinn import AllenCahn1D, Causal, GradNorm  # noqa: E402
from sciinr import diff  # noqa: E402
from sciinr.nn import CoordinateMLP, FourierFeatures, PeriodicEmbedding  # noqa: E402


def machine() -> dict:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(
            (
                l.split(":", 1)[1].strip()
                for l in lscpu.splitlines()
                if "Model name" in l
            ),
            platform.processor(),
        )
    except OSError:
        model = platform.processor()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def _best(f, *args, repeats=5) -> tuple[float, float]:
    """Best wall time and best CPU time (of this process) of `f(*args)`."""
    jax.block_until_ready(f(*args))  # compile
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(f(*args))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


# -- 1. derivatives ----------------------------------------------------------------


def derivative_methods(order: int) -> dict:
    """`name -> (params, x) -> d^order u / dx1^order` for one point."""

    def scalar(field):
        return lambda x: field(x)[0]

    def ours(mode):
        return lambda field, x: diff.derivative(scalar(field), x, 1, order, mode=mode)

    def nested_reverse(field, x):
        g = scalar(field)
        for _ in range(order):
            g = (lambda h: lambda y: jax.grad(h)(y)[1])(g)
        return g(x)

    methods = {
        "sciinr.diff (jvp)": ours("jvp"),
        "sciinr.diff (taylor)": ours("taylor"),
        "grad of grad": nested_reverse,
    }
    if order == 2:
        methods["jax.hessian"] = lambda field, x: jax.hessian(scalar(field))(x)[1, 1]
    return methods


def bench_derivatives(args) -> list[dict]:
    field = CoordinateMLP(2, 1, 256, 4, activation=jnp.tanh, key=jr.key(0))
    xs = jr.uniform(jr.key(1), (args.derivative_points, 2), minval=-1, maxval=1)
    rows = []
    for order in args.orders:
        methods = derivative_methods(order)
        compiled = {
            name: eqx.filter_jit(lambda f, xs, m=m: jax.vmap(lambda x: m(f, x))(xs))
            for name, m in methods.items()
        }
        values = {name: np.asarray(f(field, xs)) for name, f in compiled.items()}
        reference = values["grad of grad"]
        times = {name: [] for name in compiled}
        for _ in range(args.repeats):
            for name, f in compiled.items():
                times[name].append(_best(f, field, xs, repeats=3))
        for name in compiled:
            wall = float(np.median([w for w, _ in times[name]]))
            cpu = float(np.median([c for _, c in times[name]]))
            n = args.derivative_points
            rows.append(
                {
                    "order": order,
                    "method": name,
                    "wall_seconds": wall,
                    "cpu_seconds": cpu,
                    "points_per_s": n / wall,
                    "points_per_cpu_s": n / cpu,
                    "max_rel_diff_vs_reverse": float(
                        np.max(np.abs(values[name] - reference))
                        / np.max(np.abs(reference))
                    ),
                    "loadavg": os.getloadavg()[0],
                }
            )
            print(
                f"order {order}  {name:22s} {n / wall:12,.0f} points/s "
                f"{n / cpu:12,.0f} points/CPU-s",
                flush=True,
            )
    return rows


# -- 2. the Allen-Cahn training step ---------------------------------------------------


def reverse_residual(u, x):
    """jaxpi's Allen-Cahn residual: u_t and u_xx by nested reverse mode."""
    s = lambda y: u(y)[0]
    g = jax.grad(s)
    value = s(x)
    u_t = g(x)[0]
    u_xx = jax.grad(lambda y: g(y)[1])(x)[1]
    return (u_t - 1e-4 * u_xx - 5.0 * (value - value**3))[None]


def allen_cahn_field(key):
    ekey, fkey = jr.split(key)
    periodic = PeriodicEmbedding(2, (None, 2.0))
    # jaxpi's Allen-Cahn embedding: scale 2 (radians), 256 features.
    features = FourierFeatures(periodic.size, 128, sigma=2.0 / (2 * math.pi), key=ekey)
    encoding = PeriodicEmbedding(2, (None, 2.0), encoding=features)
    return CoordinateMLP(
        2, 1, 256, 4, encoding=encoding, activation=jnp.tanh, linear="rwf", key=fkey
    )


def steps_per_second(problem, field, args) -> tuple[float, float]:
    """Steps per second of wall time and per second of CPU time (this process), of
    the training steps alone.

    A first `fit` call compiles the chunk and the final evaluation; the timed calls
    reuse both (the same static structure hits `fit`'s compilation cache). A `fit`
    call also has a fixed cost (setting up, the final evaluation, the history), so
    two calls are timed, of `steps_per_call` and of `(1 + chunks) * steps_per_call`
    steps, and the rate is that of the difference: `chunks * steps_per_call` steps.
    Pinned to one core with single-threaded XLA, CPU time is the time the core spent
    on this run: on a shared machine it estimates the wall time on an idle core.
    """
    spc = args.steps_per_call
    common = dict(key=jr.key(3), steps_per_call=spc, progress=False)

    def timed(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        sciinr.fit(problem, field, optax.adam(1e-3), steps=steps, **common)
        return time.perf_counter() - t0, time.process_time() - c0

    timed(spc)  # compiles
    short_wall, short_cpu = timed(spc)
    long_wall, long_cpu = timed(spc * (1 + args.chunks))
    steps = spc * args.chunks
    return steps / (long_wall - short_wall), steps / (long_cpu - short_cpu)


def bench_training(args) -> list[dict]:
    rows = []
    field = allen_cahn_field(jr.key(0))
    for n in args.points:
        ours = AllenCahn1D(
            n_collocation=n,
            weighting=GradNorm(1000, 0.9),
            causal=Causal(1.0, 32),
            resolution=(11, 64),
        )
        baseline = eqx.tree_at(lambda p: p.residual, ours, reverse_residual)
        names = ("sciinr (forward mode)", "reverse mode (jaxpi residual)")
        rates = {name: [] for name in names}
        for _ in range(args.repeats):
            for name, problem in zip(names, (ours, baseline)):
                rates[name].append(steps_per_second(problem, field, args))
        # The grad-norm refresh (every 1000 steps), timed on its own.
        batch = ours.sample(jr.key(5))
        state = ours.init_state()
        update = eqx.filter_jit(ours.update_state)
        refresh = _best(update, field, batch, state, jnp.int32(0), repeats=3)
        skip = _best(update, field, batch, state, jnp.int32(1), repeats=3)
        row = {"points": n, "loadavg": os.getloadavg()[0]}
        for name, values in rates.items():
            row[name] = float(np.median([w for w, _ in values]))
            row[name + " per CPU-s"] = float(np.median([c for _, c in values]))
            row[name + " (all)"] = values
        row["ratio"] = row[names[0]] / row[names[1]]
        row["ratio per CPU-s"] = (
            row[names[0] + " per CPU-s"] / row[names[1] + " per CPU-s"]
        )
        row["refresh_cpu_seconds"] = refresh[1] - skip[1]
        rows.append(row)
        print(
            f"Allen-Cahn step, {n} points: sciinr {row[names[0]]:.2f} steps/s "
            f"({row[names[0] + ' per CPU-s']:.2f} per CPU-s), reverse-mode residual "
            f"{row[names[1]]:.2f} steps/s ({row[names[1] + ' per CPU-s']:.2f} per "
            f"CPU-s): x{row['ratio']:.2f} (x{row['ratio per CPU-s']:.2f} in CPU "
            f"time); grad-norm refresh {refresh[1] - skip[1]:.2f} CPU-s (every 1000 "
            "steps)",
            flush=True,
        )
    return rows


def main() -> int:
    info = machine()
    print(json.dumps(info), flush=True)
    results = {"machine": info}
    if not ARGS.skip_derivatives:
        results["derivatives"] = bench_derivatives(ARGS)
    if not ARGS.skip_training:
        results["training"] = bench_training(ARGS)
    info["loadavg_end"] = os.getloadavg()
    print(f"load average at the end: {info['loadavg_end']}")
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

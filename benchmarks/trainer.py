"""Trainer throughput: steps/s and achieved GFLOP/s against a plain matmul.

For a 4 x 256 ReLU MLP on 256 Gaussian Fourier features (fixed B, recomputed every
step), trained full batch on the `camera` image at 64^2, 128^2 and 256^2 pixels (the
"fit" protocol: every pixel in every step), this measures

- the steady-state steps/s of `sciinr.fit` (chunks after the first, which compiles);
- the steps/s of a naive loop that dispatches one jitted step per Python iteration
  (no host sync inside the loop, one `block_until_ready` at the end);
- achieved GFLOP/s = 6 x trainable parameters x pixels x steps/s (forward 2, backward
  4 flops per parameter per point; the Fourier features and the optimizer are not
  counted), and its ratio to the GFLOP/s of a plain float32 2048 x 2048 matmul
  measured in the same run;
- peak memory (host RSS; device peak on GPU);
- with `--state`: the steps/s of the same training with a problem that carries state
  (a loss weight refreshed every 1000 steps under `lax.cond`, plus a counter), against
  the stateless problem, alternated in the same run: the cost of the state mechanism;
- with `--memory`: the peak memory of rendering a 1024 x 1024 grid with the 4 x 256
  MLP through `sciinr.nn.apply`, all points at once against `chunk_size=65536`, each
  in a fresh process (host RSS on CPU, device peak on GPU).

    python benchmarks/trainer.py                  # all sizes, dense and RWF
    python benchmarks/trainer.py --sizes 128 --linear rwf --json out.json
    python benchmarks/trainer.py --sizes 128 256 --state --memory

Run on an otherwise idle machine; the load average is printed before and after.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import sciinr
from problems.image import ImageRegression
from sciinr.nn import CoordinateMLP, FourierFeatures, num_parameters, trainable


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "loadavg_before": os.getloadavg(),
    }
    return info


def matmul_gflops(n: int = 2048, repeats: int = 20) -> float:
    """Best-of-`repeats` GFLOP/s of a float32 n x n matmul."""
    a = jr.normal(jr.key(0), (n, n), jnp.float32)
    b = jr.normal(jr.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def make_field(linear: str, key) -> eqx.Module:
    fkey, mkey = jr.split(key)
    encoding = FourierFeatures(2, 256, sigma=10.0, key=fkey)
    return CoordinateMLP(2, 1, 256, 4, encoding=encoding, linear=linear, key=mkey)


_OPTIMIZER = optax.adam(1e-3)  # one object: repeated fits reuse the compiled step


def trainer_steps_per_s(problem, field, steps_per_call: int, chunks: int) -> float:
    """Median steps/s of `sciinr.fit`'s chunks, excluding any that compiled."""
    result = sciinr.fit(
        problem,
        field,
        _OPTIMIZER,
        steps=steps_per_call * chunks,
        key=jr.key(0),
        steps_per_call=steps_per_call,
        progress=False,
    )
    rates = result.history["steps_per_s"][steps_per_call - 1 :: steps_per_call]
    return float(np.median(rates[1:]))  # one value per chunk; the first may compile


def naive_steps_per_s(problem, field, steps: int) -> float:
    """A loop that dispatches one jitted step per Python iteration (no host sync)."""
    params, static = eqx.partition(field, trainable(field))
    opt_state = _OPTIMIZER.init(params)
    key = jr.key(0)
    for i in range(2):  # compile and warm up
        params, opt_state, loss = _naive_step(
            params, opt_state, jr.fold_in(key, i), problem, static
        )
    jax.block_until_ready(loss)
    t = time.perf_counter()
    for i in range(steps):
        params, opt_state, loss = _naive_step(
            params, opt_state, jr.fold_in(key, i), problem, static
        )
    jax.block_until_ready(loss)
    return steps / (time.perf_counter() - t)


# The problem and the non-trainable part are arguments, not closed-over constants
# (which XLA would try to constant-fold at compile time).
@eqx.filter_jit
def _naive_step(params, opt_state, key, problem, static):
    batch = problem.sample(key)

    def loss_fn(p):
        return problem.loss(eqx.combine(p, static), batch)[0]

    loss, grads = jax.value_and_grad(loss_fn)(params)
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = _OPTIMIZER.update(grads, opt_state, params)
    return eqx.apply_updates(params, updates), opt_state, loss


class WeightedImage(sciinr.AbstractProblem):
    """`ImageRegression` with problem state: a loss weight refreshed every `every`
    steps from the current loss (under `lax.cond`) and a refresh counter."""

    image: ImageRegression
    every: int = eqx.field(static=True, default=1000)

    def sample(self, key):
        return self.image.sample(key)

    def init_state(self):
        return {"weight": jnp.array(1.0), "refreshes": jnp.array(0, jnp.int32)}

    def update_state(self, field, batch, state, step):
        def refresh(state):
            mse = jax.lax.stop_gradient(self.image.loss(field, batch)[0])
            return {"weight": 1.0 / (1.0 + mse), "refreshes": state["refreshes"] + 1}

        return jax.lax.cond(step % self.every == 0, refresh, lambda s: s, state)

    def loss(self, field, batch, state):
        mse, terms = self.image.loss(field, batch)
        return state["weight"] * mse, terms

    def evaluate(self, field):
        return self.image.evaluate(field)

    def predict(self, field):
        return self.image.predict(field)


def state_overhead(size: int, linear: str, repeats: int, scale: int) -> dict:
    """Steps/s with and without problem state, alternated; median ratio."""
    stateless = ImageRegression("camera", size=size, protocol="fit")
    stateful = WeightedImage(stateless)
    field = make_field(linear, jr.key(1))
    spc, chunks, _ = SCHEDULE.get(size, (5, 4, 10))
    if jax.default_backend() != "cpu":
        spc *= 20
    ratios, plain, carried = [], [], []
    for _ in range(repeats):
        a = trainer_steps_per_s(stateless, field, spc * scale, chunks)
        b = trainer_steps_per_s(stateful, field, spc * scale, chunks)
        plain.append(a)
        carried.append(b)
        ratios.append(b / a)
    return {
        "size": size,
        "linear": linear,
        "stateless_steps_per_s": float(np.median(plain)),
        "stateful_steps_per_s": float(np.median(carried)),
        "stateful_vs_stateless": float(np.median(ratios)),
        "range": [float(min(ratios)), float(max(ratios))],
    }


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(mode: str) -> None:
    """Render a 1024^2 grid in this process and print its peak memory (MB)."""
    field = make_field("dense", jr.key(1))
    coords, _ = sciinr.grid((1024, 1024))
    render = eqx.filter_jit(sciinr.nn.apply)
    jax.block_until_ready((field, coords))
    base = _rss_peak_mb()
    if mode != "none":
        chunk = None if mode == "whole" else 65_536
        t = time.perf_counter()
        values = render(field, coords, chunk_size=chunk)
        jax.block_until_ready(values)
        seconds = time.perf_counter() - t
    else:
        seconds = 0.0
    stats = jax.devices()[0].memory_stats() or {}
    print(
        json.dumps(
            {
                "mode": mode,
                "rss_before_mb": base,
                "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                / 1024,
                "device_peak_mb": stats.get("peak_bytes_in_use", 0) / 2**20,
                "seconds_with_compile": seconds,
            }
        )
    )


def predict_memory() -> list[dict]:
    """Peak memory of rendering 1024^2 points whole and chunked, each in a fresh
    process (`none` only builds the field and the grid: the baseline)."""
    rows = []
    for mode in ("none", "chunked", "whole"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", mode],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def peak_memory_mb() -> dict:
    out = {
        "host_rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    }
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    return out


# (steps_per_call, chunks, naive steps): chunks of about a second or more on 2 cores.
SCHEDULE = {64: (50, 3, 50), 128: (20, 3, 20), 256: (5, 3, 5)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--linear", nargs="+", default=["dense", "rwf"])
    parser.add_argument("--scale", type=int, default=1, help="multiply step counts")
    parser.add_argument("--repeats", type=int, default=3, help="alternations")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--state", action="store_true", help="state overhead")
    parser.add_argument("--memory", action="store_true", help="1024^2 render memory")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child)
        return 0

    info = machine()
    print(
        f"# {info['device_kind']} ({info['backend']}), jax {info['jax']}, "
        f"{info['cpus']} CPUs (affinity {info['affinity']}), "
        f"load before {info['loadavg_before'][0]:.2f}",
        file=sys.stderr,
    )
    rows = []
    matmuls = []
    for size in [] if args.skip_throughput else args.sizes:
        problem = ImageRegression("camera", size=size, protocol="fit")
        spc, chunks, naive_n = SCHEDULE.get(size, (5, 4, 10))
        if jax.default_backend() != "cpu":
            spc, naive_n = spc * 20, naive_n * 20
        for linear in args.linear:
            field = make_field(linear, jr.key(1))
            params = num_parameters(field)
            gflop = 6 * params * size * size / 1e9
            # Alternate matmul and trainer measurements; compare within a repeat.
            reps = []
            for _ in range(args.repeats):
                matmul = matmul_gflops(repeats=10)
                fit_rate = trainer_steps_per_s(problem, field, spc * args.scale, chunks)
                naive_rate = naive_steps_per_s(problem, field, naive_n * args.scale)
                matmuls.append(matmul)
                reps.append((matmul, fit_rate, naive_rate))
            matmul_r, fit_r, naive_r = (np.asarray(x) for x in zip(*reps))
            fit_ratio = gflop * fit_r / matmul_r
            naive_ratio = gflop * naive_r / matmul_r
            row = {
                "size": size,
                "linear": linear,
                "parameters": params,
                "points": size * size,
                "gflop_per_step": gflop,
                "matmul_gflops": float(np.median(matmul_r)),
                "fit_steps_per_s": float(np.median(fit_r)),
                "fit_gflops": float(np.median(gflop * fit_r)),
                "fit_vs_matmul": float(np.median(fit_ratio)),
                "fit_vs_matmul_range": [float(fit_ratio.min()), float(fit_ratio.max())],
                "naive_steps_per_s": float(np.median(naive_r)),
                "naive_vs_matmul": float(np.median(naive_ratio)),
            }
            rows.append(row)
            print(
                f"{size:4d}^2 {linear:5s} fit {row['fit_steps_per_s']:8.2f} steps/s "
                f"{row['fit_gflops']:7.1f} GFLOP/s = {100 * row['fit_vs_matmul']:5.1f}%"
                f" of matmul ({100 * fit_ratio.min():.0f}-{100 * fit_ratio.max():.0f}%)"
                f" | naive {row['naive_steps_per_s']:8.2f} steps/s "
                f"({100 * row['naive_vs_matmul']:5.1f}%)",
                file=sys.stderr,
            )
    info["loadavg_after"] = os.getloadavg()
    memory = peak_memory_mb()
    print(
        f"# load after {info['loadavg_after'][0]:.2f}; peak memory {memory}",
        file=sys.stderr,
    )

    if rows:
        print(
            f"\nMatmul (float32 2048^2): median {np.median(matmuls):.1f} GFLOP/s "
            f"(range {min(matmuls):.1f}-{max(matmuls):.1f}) over {len(matmuls)} runs\n"
        )
        print(
            "| image | linear | params | GFLOP/step | fit steps/s | fit GFLOP/s | "
            "fit / matmul (range) | naive steps/s | naive / matmul |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            low, high = r["fit_vs_matmul_range"]
            print(
                f"| {r['size']}² | {r['linear']} | {r['parameters']:,} | "
                f"{r['gflop_per_step']:.2f} | {r['fit_steps_per_s']:.2f} | "
                f"{r['fit_gflops']:.1f} | {100 * r['fit_vs_matmul']:.0f} % "
                f"({100 * low:.0f}-{100 * high:.0f}) | "
                f"{r['naive_steps_per_s']:.2f} | {100 * r['naive_vs_matmul']:.0f} % |"
            )
    state_rows = []
    if args.state:
        header = "| image | linear | stateless steps/s | stateful steps/s | ratio |"
        print("\n" + header)
        print("|---|---|---|---|---|")
        for size in args.sizes:
            for linear in args.linear:
                r = state_overhead(size, linear, args.repeats, args.scale)
                state_rows.append(r)
                low, high = r["range"]
                print(
                    f"| {size}² | {linear} | {r['stateless_steps_per_s']:.2f} | "
                    f"{r['stateful_steps_per_s']:.2f} | "
                    f"{100 * r['stateful_vs_stateless']:.1f} % "
                    f"({100 * low:.1f}-{100 * high:.1f}) |"
                )
    memory_rows = []
    if args.memory:
        memory_rows = predict_memory()
        base = memory_rows[0]["rss_peak_mb"]
        print(
            "\n| 1024² render, 4 x 256 MLP | peak RSS | above baseline | device peak |"
        )
        print("|---|---|---|---|")
        for r in memory_rows:
            print(
                f"| {r['mode']} | {r['rss_peak_mb']:.0f} MB | "
                f"{r['rss_peak_mb'] - base:.0f} MB | {r['device_peak_mb']:.0f} MB |"
            )
    info["loadavg_end"] = os.getloadavg()
    print(f"# load at the end {info['loadavg_end'][0]:.2f}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": info,
                    "matmul_gflops": matmuls,
                    "memory": memory,
                    "rows": rows,
                    "state": state_rows,
                    "predict_memory": memory_rows,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

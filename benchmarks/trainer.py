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
- peak memory (host RSS; device peak on GPU).

    python benchmarks/trainer.py                  # all sizes, dense and RWF
    python benchmarks/trainer.py --sizes 128 --linear rwf --json out.json

Run on an otherwise idle machine; the load average is printed before and after.
"""

import argparse
import json
import os
import platform
import resource
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
    args = parser.parse_args(argv)

    info = machine()
    print(
        f"# {info['device_kind']} ({info['backend']}), jax {info['jax']}, "
        f"{info['cpus']} CPUs (affinity {info['affinity']}), "
        f"load before {info['loadavg_before'][0]:.2f}",
        file=sys.stderr,
    )
    rows = []
    matmuls = []
    for size in args.sizes:
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
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": info,
                    "matmul_gflops": matmuls,
                    "memory": memory,
                    "rows": rows,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

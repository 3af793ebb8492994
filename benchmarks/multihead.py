"""Multi-head fields: cost per training step against a per-pixel MLP.

On the `camera` image at N^2 pixels (default 256^2, the `"fit"` protocol: every pixel
in every step, Adam), this measures in ONE run, alternating the models `--repeats`
times so that drifts of a shared machine hit all of them alike:

- `mlp`: a per-pixel `CoordinateMLP` (2 -> depth x width ReLU -> 1; default 4 x 256,
  no encoding), the single-head network of the same body width and depth;
- `heads dense` / `heads sparse`: a `MultiHeadField` with `--tiles` x `--tiles` heads
  (default 64^2) on the same body, trained through `render` (the body once per local
  coordinate, all heads with one product); sparse heads read `--alpha` neurons;
- `heads per pixel`: the same dense multi-head field evaluated per pixel (the
  `batch_size=N^2` path of `ImageRegression`: N^2 pixels drawn with replacement
  per step), to separate the gain of the joint input space from that of the
  smaller body workload.

Reported: the median steady-state steps/s of `sciinr.fit` (chunks after the first,
which compiles), the matmul FLOPs per step (forward 2 + backward 4 per
multiply-add, as executed: the body on the points it sees, the head product densified
for every pixel; biases, activations and Adam not counted) and both ratios to the
MLP. Target (issue 8): a step of 64^2 heads at 256^2 costs at most 1/10 of the MLP's.

    python benchmarks/multihead.py                    # 256^2, 64^2 heads, 4 x 256
    python benchmarks/multihead.py --size 128 --tiles 32 --width 128 --repeats 2

The machine, JAX version and load average are printed next to the numbers.
"""

import argparse
import json
import os
import platform
import subprocess
import sys

import jax
import jax.random as jr
import numpy as np
import optax

import sciinr
from problems.image import ImageRegression
from sciinr.nn import CoordinateMLP, MultiHeadField, num_parameters


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10)
        for line in lscpu.stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def flops_per_step(field, pixels: int, per_pixel: bool = False) -> int:
    """Matmul FLOPs of one full-batch step, as executed (see the module docstring):
    per pixel, a multi-head field runs its body and one head on every pixel."""
    if isinstance(field, MultiHeadField) and per_pixel:
        body = sum(l.in_features * l.out_features for l in field.body.layers)
        return 6 * (body + field.out_size * field.width_size) * pixels
    if isinstance(field, MultiHeadField):
        local = pixels // field.n_heads
        body = sum(l.in_features * l.out_features for l in field.body.layers)
        return 6 * (
            body * local + field.n_heads * field.out_size * field.width_size * local
        )
    return 6 * sum(l.in_features * l.out_features for l in field.layers) * pixels


_OPTIMIZER = optax.adam(1e-3)  # one object: repeated fits reuse the compiled step


def steps_per_s(problem, field, steps_per_call: int, chunks: int) -> float:
    """Median steps/s of `sciinr.fit`'s chunks after the first (which compiles)."""
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
    return float(np.median(rates[1:]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--alpha", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="alternations")
    parser.add_argument(
        "--mlp-steps", type=int, default=4, help="MLP steps per chunk (3 chunks)"
    )
    parser.add_argument(
        "--heads-steps", type=int, default=200, help="multi-head steps per chunk"
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    info = machine()
    print(
        f"# {info['cpu']} ({info['backend']}, {info['cpus']} CPUs), jax "
        f"{info['jax']}, load before {info['loadavg']}",
        file=sys.stderr,
    )
    size, pixels = args.size, args.size**2
    full = ImageRegression("camera", size=size, protocol="fit")
    per_pixel = ImageRegression("camera", size=size, protocol="fit", batch_size=pixels)
    key = jr.key(0)
    body = dict(width_size=args.width, depth=args.depth)
    models = {
        "mlp": (full, CoordinateMLP(2, 1, **body, key=key), args.mlp_steps),
        "heads dense": (
            full,
            MultiHeadField(2, 1, args.tiles, **body, key=key),
            args.heads_steps,
        ),
        "heads sparse": (
            full,
            MultiHeadField(
                2, 1, args.tiles, **body, heads="sparse", alpha=args.alpha, key=key
            ),
            args.heads_steps,
        ),
        "heads per pixel": (
            per_pixel,
            MultiHeadField(2, 1, args.tiles, **body, key=key),
            args.mlp_steps,
        ),
    }
    rates = {name: [] for name in models}
    for repeat in range(args.repeats):
        for name, (problem, field, spc) in models.items():
            rate = steps_per_s(problem, field, spc, 3)
            rates[name].append(rate)
            print(f"  repeat {repeat}: {name:16s} {rate:9.2f} steps/s", file=sys.stderr)

    mlp_rates = np.asarray(rates["mlp"])
    mlp_flops = flops_per_step(models["mlp"][1], pixels)
    rows = []
    for name, (_, field, _) in models.items():
        r = np.asarray(rates[name])
        ratio = mlp_rates / r  # time per step relative to the MLP, per repeat
        flops = flops_per_step(field, pixels, per_pixel=name == "heads per pixel")
        rows.append(
            {
                "model": name,
                "parameters": num_parameters(field),
                "gflop_per_step": flops / 1e9,
                "steps_per_s": float(np.median(r)),
                "ms_per_step": 1e3 / float(np.median(r)),
                "time_vs_mlp": float(np.median(ratio)),
                "time_vs_mlp_range": [float(ratio.min()), float(ratio.max())],
                "flops_vs_mlp": flops / mlp_flops,
            }
        )
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(
        f"\n{size}^2 pixels, body {args.depth} x {args.width}, {args.tiles}^2 heads "
        f"(sparse: alpha {args.alpha}); load after {info['loadavg_after']}"
    )
    print(
        "| model | parameters | GFLOP/step | steps/s | ms/step | time vs MLP "
        "(range) | FLOPs vs MLP |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        low, high = row["time_vs_mlp_range"]
        print(
            f"| {row['model']} | {row['parameters']:,} | {row['gflop_per_step']:.3f} "
            f"| {row['steps_per_s']:.2f} | {row['ms_per_step']:.2f} "
            f"| {row['time_vs_mlp']:.4f} ({low:.4f}-{high:.4f}) "
            f"| {row['flops_vs_mlp']:.4f} |"
        )
    dense = rows[1]["time_vs_mlp"]
    print(
        f"\ntarget: 64^2 heads at most 1/10 of the MLP per step: "
        f"{'met' if dense <= 0.1 else 'MISSED'} ({dense:.4f})"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CT projector throughput against scikit-image, and the CT training step time.

1. `problems.ct.radon` (jitted, float32): the forward projection and its gradient
   (the transpose, through `jax.grad` of a squared loss), in ray samples per
   second (angles x detector bins x samples per ray = a N^2), against
   `skimage.transform.radon(image, theta, circle=True)` on the same image and
   angles (float64 NumPy + C). Best of `--repeats`, alternating ours and theirs.
2. The training step of `problems.ct.ComputedTomography` at 256^2 with 20 angles
   (Shepp-Logan), with the example's default field (256 Gaussian Fourier features,
   RWF MLP 4 x 128, Adam): `sciinr.fit` steps/s for the `"grid"` projector (the field
   on the 256^2 pixel grid, then `radon`) and for the `"rays"` projector (the field
   at every ray sample, for 2 and 5 of the 20 angles per step; the cost grows with
   the number of points, so all 20 angles cost about 4 times the 5-angle step, in
   memory too: 1.3M points per step).

    python benchmarks/ct.py                    # everything (a few minutes)
    python benchmarks/ct.py --skip-training --json out.json

Prints the machine, the JAX version and the load average before and after.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import skimage.transform

import sciinr
from problems.ct import ComputedTomography, disk_mask, radon
from sciinr.nn import CoordinateMLP, FourierFeatures


def machine() -> dict:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(
            line.split(":", 1)[1].strip()
            for line in lscpu.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):  # pragma: no cover
        model = platform.processor() or platform.machine()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "loadavg_before": os.getloadavg(),
    }


def best_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile / warm up
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def projector_rows(configs, repeats: int) -> list[dict]:
    rows = []
    for size, n_angles in configs:
        rng = np.random.default_rng(0)
        image = (rng.uniform(size=(size, size)) * disk_mask(size)).astype(np.float32)
        angles = np.arange(n_angles) * (np.pi / n_angles)
        x = jnp.asarray(image)
        a = jnp.asarray(angles, jnp.float32)
        forward = jax.jit(radon)
        gradient = jax.jit(jax.grad(lambda im, a: 0.5 * jnp.sum(radon(im, a) ** 2)))
        theta = np.degrees(angles)
        image64 = image.astype(np.float64)
        times = {"ours": [], "grad": [], "skimage": []}
        for _ in range(repeats):  # alternate: compare within one repeat
            times["ours"].append(best_time(lambda: forward(x, a), 1))
            times["grad"].append(best_time(lambda: gradient(x, a), 1))
            t = time.perf_counter()
            skimage.transform.radon(image64, theta=theta, circle=True)
            times["skimage"].append(time.perf_counter() - t)
        samples = n_angles * size * size
        best = {k: min(v) for k, v in times.items()}
        row = {
            "size": size,
            "angles": n_angles,
            "samples": samples,
            "forward_s": best["ours"],
            "gradient_s": best["grad"],
            "skimage_s": best["skimage"],
            "forward_msamples_per_s": samples / best["ours"] / 1e6,
            "gradient_msamples_per_s": samples / best["grad"] / 1e6,
            "skimage_msamples_per_s": samples / best["skimage"] / 1e6,
        }
        rows.append(row)
        print(
            f"{size}^2 x {n_angles}: forward {1e3 * row['forward_s']:.1f} ms "
            f"({row['forward_msamples_per_s']:.0f} M/s), gradient "
            f"{1e3 * row['gradient_s']:.1f} ms, skimage {1e3 * row['skimage_s']:.1f} "
            f"ms ({row['skimage_msamples_per_s']:.0f} M/s)",
            file=sys.stderr,
        )
    return rows


def make_field(key):
    encoding_key, field_key = jr.split(key)
    encoding = FourierFeatures(2, 256, sigma=3.0, key=encoding_key)
    return CoordinateMLP(2, 1, 128, 4, encoding=encoding, linear="rwf", key=field_key)


def training_rows(size: int, chunks: int) -> list[dict]:
    rows = []
    # (projector, angles per step, steps per call)
    for projector, per_step, spc in (
        ("grid", None, 5),
        ("rays", 2, 5),
        ("rays", 5, 2),
    ):
        problem = ComputedTomography(
            size=size, n_angles=20, projector=projector, angles_per_step=per_step
        )
        result = sciinr.fit(
            problem,
            make_field(jr.key(1)),
            optax.adam(1e-3),
            steps=spc * (chunks + 1),
            key=jr.key(0),
            steps_per_call=spc,
            progress=False,
        )
        rates = result.history["steps_per_s"][spc - 1 :: spc][1:]  # skip compile
        angles = 20 if per_step is None else per_step
        points = size * size if projector == "grid" else angles * size * size
        row = {
            "projector": projector,
            "angles_per_step": angles,
            "field_points_per_step": points,
            "steps_per_s": float(np.median(rates)),
            "s_per_step": float(1 / np.median(rates)),
        }
        rows.append(row)
        print(
            f"train {size}^2 {projector} ({angles} angles/step, {points:,} field "
            f"points): {row['s_per_step']:.2f} s/step",
            file=sys.stderr,
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="training image side")
    parser.add_argument("--chunks", type=int, default=2, help="timed fit chunks")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    info = machine()
    print(
        f"# {info['cpu']} ({info['cpus']} CPUs), {info['device_kind']}, jax "
        f"{info['jax']}, load before {info['loadavg_before'][0]:.2f}",
        file=sys.stderr,
    )
    configs = [(256, 20), (256, 180), (512, 180)]
    projector = projector_rows(configs, args.repeats)
    training = [] if args.skip_training else training_rows(args.size, args.chunks)
    info["loadavg_after"] = os.getloadavg()
    print(f"# load after {info['loadavg_after'][0]:.2f}", file=sys.stderr)

    print(
        "| image x angles | ray samples | radon forward | radon gradient | "
        "skimage radon | forward / skimage |"
    )
    print("|---|---|---|---|---|---|")
    for r in projector:
        print(
            f"| {r['size']}² x {r['angles']} | {r['samples'] / 1e6:.1f} M | "
            f"{1e3 * r['forward_s']:.0f} ms ({r['forward_msamples_per_s']:.0f} M/s) | "
            f"{1e3 * r['gradient_s']:.0f} ms ({r['gradient_msamples_per_s']:.0f} M/s) "
            f"| {1e3 * r['skimage_s']:.0f} ms ({r['skimage_msamples_per_s']:.0f} M/s) "
            f"| {r['skimage_s'] / r['forward_s']:.1f}x |"
        )
    if training:
        print("\n| projector | angles per step | field points per step | s / step |")
        print("|---|---|---|---|")
        for r in training:
            print(
                f"| {r['projector']} | {r['angles_per_step']} | "
                f"{r['field_points_per_step']:,} | {r['s_per_step']:.2f} |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"machine": info, "projector": projector, "training": training},
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

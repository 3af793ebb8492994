"""The multi-head ReLU network's experiments: heads vs generalization, spectral bias,
cost (Aftab, Morsali and Ghaemmaghami, 2022).

`--experiment`:

- `heads` (a): train on the image at N x N and test at 2N x 2N (the `superres`
  protocol) for 1^2, 2^2, ... heads (`--tiles-list`), plus a single-head
  `CoordinateMLP` of the same width and depth trained per pixel; train and test PSNR
  against the number of heads.
- `octaves` (b): fit Perlin noise of octave 1, 2, 4, ... (`--octaves`) with every
  tiling of `--tiles-list` (1 = a single head); PSNR against octave.
- `cost` (c): parameters, FLOPs per step and measured time per step of the tilings
  of `--tiles-list` against the single-head MLP of equal width and depth on one
  N x N image (the `fit` protocol).

CPU defaults (each about a minute on 2 cores): N = 64 (128 for `cost`), a body of 4
hidden ReLU layers of 64 on the raw local coordinates (no encoding), dense heads,
Adam 1e-3 with the authors' decay (x exp(-0.1) every 50 steps), 500 full-batch steps
(60 for `cost`, which only times them).

    python examples/multihead.py --out heads.h5 --plot heads.png
    python examples/multihead.py --experiment octaves --plot octaves.png
    python examples/multihead.py --experiment cost --size 256 --width 256 \
        --tiles-list 64
    python examples/multihead.py --paper --out paper.h5 --plot paper.png

`--paper` switches to the paper's budget: N = 256 (tested at 512), heads 1^2 ...
128^2 (octaves 1 ... 128 for `octaves`), a 4 x 256 body, sparse heads without bias
whose width and `alpha` keep the parameter count of the authors' reference network
(256^2 heads reading 32 neurons each, as their `calculate_hyperparameter`), 2000
steps. That is GPU-sized: hours on a CPU, where it was not timed.

Prints one JSON line of metrics; `--out` writes an HDF5 run file (the best
multi-head field, every run's history, the result table), `--plot` a figure.
"""

import argparse
import copy
import json
import os
import platform
import subprocess
import sys

import jax
import jax.random as jr
import numpy as np
import optax
from _cli import (
    add_field_arguments,
    add_training_arguments,
    build_field,
    eval_every,
    main_process,
    mesh,
    parser as make_parser,
    print_metrics,
)

import sciinr
from problems.image import ImageRegression, IMAGES, perlin_noise


EXPERIMENTS = ("heads", "octaves", "cost")
DEFAULTS = {  # (CPU, --paper)
    "size": ({"heads": 64, "octaves": 64, "cost": 128}, 256),
    "tiles_list": (
        {"heads": "1,2,4,8,16,32", "octaves": "1,8", "cost": "8,32"},
        {"heads": "1,2,4,8,16,32,64,128", "octaves": "1,2,4,8,16,32,64,128"},
    ),
    "octaves": ("1,2,4,8,16,32", "1,2,4,8,16,32,64,128"),
}


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive ints, got {text!r}"
        )
    return values


def parse_args(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--experiment", default="heads", choices=EXPERIMENTS)
    parser.add_argument(
        "--paper",
        action="store_true",
        help="the paper's budget (GPU-sized; hours on a CPU)",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--image", default="camera", choices=sorted(IMAGES), help="heads, cost"
    )
    data.add_argument(
        "--size", type=int, default=None, help="training side N (64; 128 for cost)"
    )
    data.add_argument(
        "--tiles-list",
        type=int_list,
        default=None,
        help="tiles per axis of every run, e.g. 1,2,4,8 (heads = tiles^2)",
    )
    data.add_argument(
        "--octaves", type=int_list, default=None, help="octaves: Perlin octaves"
    )
    data.add_argument(
        "--match-parameters",
        action="store_true",
        help="keep the parameter count of the authors' reference network (256^2 "
        "heads, alpha 32, --width) by widening the heads, then the body",
    )
    data.add_argument(
        "--decay-every",
        type=int,
        default=50,
        help="multiply the learning rate by exp(-0.1) every this many steps (the "
        "authors' schedule); 0 keeps it constant",
    )
    add_field_arguments(
        parser, model="multihead", encoding="none", linear="dense", width=64
    )
    add_training_arguments(parser, steps=500, steps_per_call=50)
    args = parser.parse_args(argv)
    paper = 1 if args.paper else 0
    if args.experiment == "cost" and args.steps == parser.get_default("steps"):
        args.steps = 60  # timing only: three chunks, the first compiles
    if args.paper:
        for name, value in dict(
            width=256,
            depth=4,
            steps=2000,
            heads="sparse",
            alpha=32,
            no_head_bias=True,
            # The cost table compares bodies of equal width.
            match_parameters=args.experiment != "cost",
            steps_per_call=100,
        ).items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    experiment = args.experiment
    if args.size is None:
        size = DEFAULTS["size"][paper]
        args.size = size[experiment] if isinstance(size, dict) else size
    if args.tiles_list is None:
        tiles = DEFAULTS["tiles_list"][paper]
        args.tiles_list = int_list(tiles.get(experiment, "64"))
    if args.octaves is None:
        args.octaves = int_list(DEFAULTS["octaves"][paper])
    if args.model != "multihead":
        parser.error("argument --model: this example trains multi-head fields")
    if args.steps < 1:
        parser.error(f"argument --steps: must be >= 1, got {args.steps}")
    if args.size < 1:
        parser.error(f"argument --size: must be >= 1, got {args.size}")
    for t in args.tiles_list:
        if args.size % t:
            parser.error(
                f"argument --tiles-list: {t} tiles do not divide --size {args.size} "
                "(every tile must get the same number of pixels)"
            )
    if args.heads == "sparse" and args.alpha is None:
        parser.error("argument --alpha: required with --heads sparse")
    return args


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def machine() -> dict:
    """What the timings ran on: CPU model, cores, JAX, load average."""
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
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def head_parameters(width: int, depth: int, heads: int, alpha: int, bias: bool) -> int:
    """Parameters of a multi-head network on 2-D coordinates with one output: the
    authors' `calculate_parameters` (body, then `alpha` weights per head)."""
    body = width * 3 + (depth - 1) * width * (width + 1)
    return body + alpha * heads + (heads if bias else 0)


def matched_width_alpha(
    heads: int, depth: int, width: int, bias: bool, base_heads=256**2, base_alpha=32
) -> tuple[int, int]:
    """Width and alpha with (at most) the parameters of the reference network of
    `base_heads` heads reading `base_alpha` of `width` neurons: `alpha` grows first,
    up to the width, then the width (with dense heads). Our reading of the
    authors' `calculate_hyperparameter`."""
    target = head_parameters(width, depth, base_heads, base_alpha, bias)
    alpha = 1
    while (
        alpha < width
        and head_parameters(width, depth, heads, alpha + 1, bias) <= target
    ):
        alpha += 1
    if alpha == width:
        while head_parameters(width + 1, depth, heads, width + 1, bias) <= target:
            width += 1
        alpha = width
    return width, alpha


def field_args(args, tiles: int, model: str = "multihead") -> argparse.Namespace:
    """The field flags of one run: `tiles` x `tiles` heads (or the MLP)."""
    run = copy.copy(args)
    run.model, run.tiles = model, [tiles, tiles]
    if model == "multihead":
        if args.match_parameters:
            run.width, alpha = matched_width_alpha(
                tiles**2, args.depth, args.width, not args.no_head_bias
            )
            run.alpha = alpha if args.heads == "sparse" else None
            if run.alpha == run.width:  # reads every neuron: dense heads
                run.heads, run.alpha = "dense", None
        elif args.heads == "sparse":
            run.alpha = min(args.alpha, args.width)
    return run


def optimizer(args):
    if args.decay_every == 0:
        return optax.adam(args.lr)
    schedule = optax.exponential_decay(
        args.lr, args.decay_every, float(np.exp(-0.1)), staircase=True
    )
    return optax.adam(schedule)


def flops_per_step(field, pixels: int) -> int:
    """Matmul FLOPs of one full-batch training step (forward 2, backward 4 per
    multiply-add), as executed: for a multi-head field the body on the local grid and
    the densified head product on every pixel; for an MLP every layer per pixel."""
    if isinstance(field, sciinr.nn.MultiHeadField):
        local = pixels // field.n_heads
        body = sum(
            layer.in_features * layer.out_features for layer in field.body.layers
        )
        heads = field.n_heads * field.out_size * field.width_size
        return 6 * (body * local + heads * local)
    weights = sum(layer.in_features * layer.out_features for layer in field.layers)
    return 6 * weights * pixels


def train(args, problem, run_args, key, label: str, steps=None):
    field_key, fit_key = jr.split(key)
    field = build_field(run_args, problem.in_size, problem.out_size, field_key)
    steps = args.steps if steps is None else steps
    print(
        f"{label}: {sciinr.nn.num_parameters(field):,} parameters",
        file=sys.stderr,
        flush=True,
    )
    result = sciinr.fit(
        problem,
        field,
        optimizer(args),
        steps=steps,
        key=fit_key,
        steps_per_call=min(args.steps_per_call, steps),
        eval_every=eval_every(args) if steps == args.steps else None,
        progress=not args.no_progress,
        mesh=mesh(args),
    )
    return field, result


def steady_seconds_per_step(history) -> float:
    """Median seconds per step of the chunks after the first (which compiles)."""
    rates = np.asarray(history["steps_per_s"])
    rates = rates[np.isfinite(rates)]
    unique = rates[np.r_[True, np.diff(rates) != 0]]
    later = unique[1:] if unique.size > 1 else unique
    return float(1.0 / np.median(later))


def merge_histories(histories: dict[str, dict]) -> dict[str, np.ndarray]:
    """Every run's history on the common steps, named `<quantity>_<run>`."""
    merged = {}
    for label, history in histories.items():
        merged.setdefault("step", history["step"])
        for name in ("loss", "psnr_train", "psnr_test"):
            if name in history and len(history[name]) == len(merged["step"]):
                merged[f"{name}_{label}"] = history[name]
    return merged


def save(args, path, field, *, history, metrics, predictions, coordinates, results):
    config = vars(args) | {"results": results, "machine": machine()}
    sciinr.io.save_run(
        path,
        field,
        history=history,
        metrics=metrics,
        predictions=predictions,
        coordinates=coordinates,
        config=config,
        problem="ImageRegression",
        seed=args.seed,
    )


# --------------------------------------------------------------------------------------
# (a) PSNR against the number of heads
# --------------------------------------------------------------------------------------


def run_heads(args):
    problem = ImageRegression(args.image, size=args.size, protocol="superres")
    keys = jr.split(jr.key(args.seed), len(args.tiles_list) + 1)
    rows, histories, fields = [], {}, {}
    for tiles, key in zip(args.tiles_list, keys):
        run_args = field_args(args, tiles)
        field, result = train(args, problem, run_args, key, f"{tiles}x{tiles} heads")
        rows.append(
            {
                "tiles": tiles,
                "heads": tiles**2,
                "width": run_args.width,
                "alpha": run_args.alpha,
                "parameters": sciinr.nn.num_parameters(field),
                "psnr_train": result.metrics["psnr_train"],
                "psnr_test": result.metrics["psnr_test"],
            }
        )
        histories[f"tiles{tiles}"] = result.history
        fields[tiles] = result.field
        print(json.dumps(rows[-1]), file=sys.stderr)
    mlp_field, mlp = train(args, problem, field_args(args, 1, "mlp"), keys[-1], "MLP")
    histories["mlp"] = mlp.history
    best = max(rows, key=lambda row: row["psnr_test"])
    single = next((row for row in rows if row["tiles"] == 1), None)
    metrics = {
        "best_tiles": best["tiles"],
        "psnr_test_best": best["psnr_test"],
        "psnr_train_best": best["psnr_train"],
        "psnr_test_mlp": mlp.metrics["psnr_test"],
        "psnr_train_mlp": mlp.metrics["psnr_train"],
    }
    if single is not None:
        metrics["psnr_test_single_head"] = single["psnr_test"]
    best_field = fields[best["tiles"]]
    rendered = sciinr.predict(problem, best_field)
    mlp_image = sciinr.predict(problem, mlp.field)["image"]
    if args.out:
        save(
            args,
            args.out,
            best_field,
            history=merge_histories(histories),
            metrics=metrics,
            predictions={
                "image": rendered["image"],
                "target": rendered["target"],
                "image_mlp": mlp_image,
                "tiles": np.array([r["tiles"] for r in rows]),
                "psnr_train": np.array([r["psnr_train"] for r in rows]),
                "psnr_test": np.array([r["psnr_test"] for r in rows]),
            },
            coordinates=problem.coordinates(),
            results=rows + [{"model": "mlp", **mlp.metrics}],
        )
    if args.plot and main_process():
        plot_heads(args, rows, mlp.metrics, rendered, mlp_image, best)
    return metrics


def _gray(image):
    image = np.clip(image, 0.0, 1.0)
    return image[..., 0] if image.shape[-1] == 1 else image


def plot_heads(args, rows, mlp, rendered, mlp_image, best):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), layout="constrained")
    x = np.log2([r["tiles"] for r in rows])
    axes[0].plot(x, [r["psnr_train"] for r in rows], "o-", label="train (N)")
    axes[0].plot(x, [r["psnr_test"] for r in rows], "s-", label="test (2N)")
    axes[0].axhline(mlp["psnr_test"], color="gray", ls="--", label="MLP test")
    axes[0].axhline(mlp["psnr_train"], color="gray", ls=":", label="MLP train")
    axes[0].set_xlabel("log2(tiles per axis)  (heads = tiles²)")
    axes[0].set_ylabel("PSNR (dB)")
    axes[0].set_title(f"{args.image}: {args.size}² → {2 * args.size}²")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    panels = [
        (rendered["target"], "target (2N)"),
        (rendered["image"], f"{best['tiles']}² heads: {best['psnr_test']:.2f} dB"),
        (mlp_image, f"MLP: {mlp['psnr_test']:.2f} dB"),
    ]
    for ax, (image, title) in zip(axes[1:], panels):
        ax.imshow(_gray(image), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_axis_off()
    fig.savefig(args.plot, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# (b) PSNR against the Perlin octave
# --------------------------------------------------------------------------------------


def run_octaves(args):
    noise_key, *keys = jr.split(jr.key(args.seed), 1 + len(args.tiles_list))
    rows, histories = [], {}
    last_field = last_problem = None
    for octave in args.octaves:
        image = perlin_noise(args.size, octave, key=jr.fold_in(noise_key, octave))
        problem = ImageRegression(image, protocol="fit")
        for tiles, key in zip(args.tiles_list, keys):
            label = f"octave {octave}, {tiles}x{tiles} heads"
            _, result = train(args, problem, field_args(args, tiles), key, label)
            rows.append(
                {"octave": octave, "tiles": tiles, "psnr": result.metrics["psnr_train"]}
            )
            histories[f"octave{octave}_tiles{tiles}"] = result.history
            last_field, last_problem = result.field, problem
            print(json.dumps(rows[-1]), file=sys.stderr)
    table = np.array(
        [[row["psnr"] for row in rows if row["octave"] == o] for o in args.octaves]
    )  # (octaves, tilings)
    metrics = {
        f"psnr_tiles{t}_octave{o}": float(table[i, j])
        for i, o in enumerate(args.octaves)
        for j, t in enumerate(args.tiles_list)
    }
    if args.out:
        rendered = sciinr.predict(last_problem, last_field)
        save(
            args,
            args.out,
            last_field,
            history=merge_histories(histories),
            metrics=metrics,
            predictions={
                "image": rendered["image"],
                "target": rendered["target"],
                "octaves": np.array(args.octaves),
                "tiles": np.array(args.tiles_list),
                "psnr": table,
            },
            coordinates=last_problem.coordinates(),
            results=rows,
        )
    if args.plot and main_process():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
        for j, tiles in enumerate(args.tiles_list):
            ax.plot(np.log2(args.octaves), table[:, j], "o-", label=f"{tiles}² heads")
        ax.set_xlabel("log2(octave)")
        ax.set_ylabel("PSNR (dB), fit")
        ax.set_title(f"Perlin noise {args.size}², {args.steps} steps")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.savefig(args.plot, dpi=100)
        plt.close(fig)
    return metrics


# --------------------------------------------------------------------------------------
# (c) cost table
# --------------------------------------------------------------------------------------


def run_cost(args):
    problem = ImageRegression(args.image, size=args.size, protocol="fit")
    pixels = args.size**2
    keys = jr.split(jr.key(args.seed), len(args.tiles_list) + 1)
    chunk = max(1, min(args.steps_per_call, args.steps // 3))
    timing = copy.copy(args)
    timing.steps_per_call, timing.eval_every, timing.plot = chunk, None, None
    rows, last = [], None
    runs = [("mlp", 1, keys[-1])] + [
        ("multihead", t, k) for t, k in zip(args.tiles_list, keys)
    ]
    for model, tiles, key in runs:
        run_args = field_args(args, tiles, model)
        label = "MLP" if model == "mlp" else f"{tiles}x{tiles} heads"
        field, result = train(timing, problem, run_args, key, label)
        seconds = steady_seconds_per_step(result.history)
        rows.append(
            {
                "model": label,
                "tiles": tiles if model == "multihead" else 0,
                "parameters": sciinr.nn.num_parameters(field),
                "gflop_per_step": flops_per_step(field, pixels) / 1e9,
                "ms_per_step": 1e3 * seconds,
                "psnr": result.metrics["psnr_train"],
            }
        )
        if model == "multihead":
            last = result.field
        print(json.dumps(rows[-1]), file=sys.stderr)
    base = rows[0]
    for row in rows:
        row["time_vs_mlp"] = row["ms_per_step"] / base["ms_per_step"]
        row["flops_vs_mlp"] = row["gflop_per_step"] / base["gflop_per_step"]
    info = machine()
    print(
        f"\n{args.image} {args.size}², body {args.depth} x {args.width}, "
        f"{args.steps} steps ({chunk} per call); {info['cpu']}, {info['cores']} "
        f"cores, jax {info['jax']}, load {info['loadavg']}",
        file=sys.stderr,
    )
    print(
        "| model | parameters | GFLOP/step | ms/step | time vs MLP | FLOPs vs MLP |",
        file=sys.stderr,
    )
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for row in rows:
        print(
            f"| {row['model']} | {row['parameters']:,} | {row['gflop_per_step']:.3f} "
            f"| {row['ms_per_step']:.2f} | {row['time_vs_mlp']:.3f} "
            f"| {row['flops_vs_mlp']:.4f} |",
            file=sys.stderr,
        )
    metrics = {"ms_per_step_mlp": base["ms_per_step"]}
    for row in rows[1:]:
        metrics[f"time_vs_mlp_tiles{row['tiles']}"] = row["time_vs_mlp"]
    if args.out:
        save(
            args,
            args.out,
            last,
            history=None,
            metrics=metrics,
            predictions={
                name: np.array([row[name] for row in rows])
                for name in ("tiles", "parameters", "gflop_per_step", "ms_per_step")
            },
            coordinates=None,
            results=rows,
        )
    if args.plot and main_process():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        labels = [row["model"] for row in rows]
        ax.bar(labels, [row["ms_per_step"] for row in rows])
        ax.set_yscale("log")
        ax.set_ylabel("ms per training step")
        ax.set_title(f"{args.size}², body {args.depth} x {args.width}")
        fig.savefig(args.plot, dpi=100)
        plt.close(fig)
    return metrics


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.paper and jax.default_backend() == "cpu":
        print(
            "--paper is the paper's GPU-sized budget: expect hours on a CPU.",
            file=sys.stderr,
        )
    run = {"heads": run_heads, "octaves": run_octaves, "cost": run_cost}
    metrics = run[args.experiment](args)
    print_metrics(metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

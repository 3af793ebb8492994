"""Fit a coordinate network to an image (the README's main job).

Defaults: the `camera` image at 128 x 128, Gaussian Fourier features (256, sigma 3)
+ an RWF MLP (4 x 256, ReLU), the Tancik protocol (train on the even pixels, test on
the odd ones), Adam 1e-3, 500 full-batch steps (about 30 s on 2 CPU cores).

    python examples/image_regression.py --out run.h5 --plot fig.png
    python examples/image_regression.py --image astronaut --size 256 --linear dense \
        --norm batch --encoding none --steps 2000

Prints the final train and test PSNR. `--out` writes the HDF5 run file (read it with
plain h5py or `sciinr.io.load_run`); `--plot` writes target | prediction | error panels
and the PSNR curve.
"""

import argparse
import json
import sys

import jax.random as jr
import numpy as np
import optax

import sciinr
from problems.image import ImageRegression, IMAGES
from sciinr.nn import (
    ACTIVATIONS,
    CoordinateMLP,
    FourierFeatures,
    PositionalEncoding,
    Siren,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--image", default="camera", choices=sorted(IMAGES))
    data.add_argument("--size", type=int, default=128, help="image side N")
    data.add_argument(
        "--protocol", default="tancik", choices=["fit", "tancik", "superres"]
    )
    data.add_argument(
        "--batch-size", type=int, default=None, help="pixels per step (full batch)"
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default="mlp",
        choices=["mlp", "siren"],
        help="siren uses --width, --depth, --linear and --omega0 only (no encoding, "
        "norm or activation choice)",
    )
    model.add_argument(
        "--encoding", default="fourier", choices=["fourier", "positional", "none"]
    )
    model.add_argument("--features", type=int, default=256, help="Fourier features")
    model.add_argument(
        "--sigma",
        type=float,
        default=3.0,
        help="Fourier scale: 3 suits 128^2 images (train grid 64^2); "
        "Tancik et al. use 10 at 512^2",
    )
    model.add_argument("--frequencies", type=int, default=8, help="positional L")
    model.add_argument("--linear", default="rwf", choices=["dense", "rwf"])
    model.add_argument(
        "--norm", default="none", choices=["none", "batch", "layer", "rms"]
    )
    model.add_argument("--activation", default="relu", choices=sorted(ACTIVATIONS))
    model.add_argument("--width", type=int, default=256)
    model.add_argument("--depth", type=int, default=4)
    model.add_argument("--omega0", type=float, default=30.0, help="SIREN frequency")
    train = parser.add_argument_group("training")
    train.add_argument("--steps", type=int, default=500)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--steps-per-call", type=int, default=100)
    train.add_argument("--eval-every", type=int, default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-progress", action="store_true")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=None, help="HDF5 run file")
    output.add_argument("--plot", default=None, help="figure (PNG)")
    return parser.parse_args(argv)


def build_field(args, in_size: int, out_size: int, key):
    encoding_key, field_key = jr.split(key)
    if args.model == "siren":
        return Siren(
            in_size,
            out_size,
            args.width,
            args.depth,
            omega0=args.omega0,
            linear=args.linear,
            key=field_key,
        )
    if args.encoding == "fourier":
        encoding = FourierFeatures(
            in_size, args.features, sigma=args.sigma, key=encoding_key
        )
    elif args.encoding == "positional":
        encoding = PositionalEncoding(in_size, args.frequencies, include_input=True)
    else:
        encoding = None
    return CoordinateMLP(
        in_size,
        out_size,
        args.width,
        args.depth,
        encoding=encoding,
        activation=args.activation,
        linear=args.linear,
        norm=None if args.norm == "none" else args.norm,
        key=field_key,
    )


def plot(path: str, result, problem, psnr_key: str = "psnr_test") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rendered = {k: np.asarray(v) for k, v in problem.predict(result.field).items()}
    image = np.clip(rendered["image"], 0.0, 1.0)
    target = rendered["target"]
    error = np.abs(image - target).mean(axis=-1)
    squeeze = (lambda a: a[..., 0]) if image.shape[-1] == 1 else (lambda a: a)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    axes[0].imshow(squeeze(target), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("target")
    axes[1].imshow(squeeze(image), cmap="gray", vmin=0, vmax=1)
    axes[1].set_title(f"prediction ({result.metrics[psnr_key]:.2f} dB test)")
    im = axes[2].imshow(error, cmap="magma")
    axes[2].set_title("|error|")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes[:3]:
        ax.set_axis_off()
    history = result.history
    for name in ("psnr_train", "psnr_test"):
        if name in history:
            mask = np.isfinite(history[name])
            axes[3].plot(history["step"][mask], history[name][mask], "o-", label=name)
    axes[3].set_xlabel("step")
    axes[3].set_ylabel("PSNR (dB)")
    axes[3].grid(alpha=0.3)
    axes[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    key = jr.key(args.seed)
    field_key, fit_key = jr.split(key)
    problem = ImageRegression(
        args.image, size=args.size, protocol=args.protocol, batch_size=args.batch_size
    )
    field = build_field(args, problem.in_size, problem.out_size, field_key)
    steps_per_call = min(args.steps_per_call, args.steps)
    eval_every = args.eval_every
    if eval_every is None and args.plot:
        eval_every = steps_per_call * max(1, args.steps // (10 * steps_per_call))
    print(
        f"{args.image} {args.size}x{args.size} ({args.protocol}), "
        f"{sciinr.nn.num_parameters(field):,} parameters",
        file=sys.stderr,
    )
    result = sciinr.fit(
        problem,
        field,
        optax.adam(args.lr),
        steps=args.steps,
        key=fit_key,
        steps_per_call=steps_per_call,
        eval_every=eval_every,
        output=args.out,
        progress=not args.no_progress,
        config=vars(args),
    )
    if args.plot:
        plot(args.plot, result, problem)
    print(json.dumps({k: round(v, 3) for k, v in result.metrics.items()}))
    print(
        f"train PSNR {result.metrics['psnr_train']:.2f} dB, "
        f"test PSNR {result.metrics['psnr_test']:.2f} dB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

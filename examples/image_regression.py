"""Fit a coordinate network to an image (the README's main job).

Defaults: the `camera` image at 128 x 128, Gaussian Fourier features (256, sigma 3)
+ an RWF MLP (4 x 256, ReLU), the Tancik protocol (train on the even pixels, test on
the odd ones), Adam 1e-3, 500 full-batch steps (about 30 s on 2 CPU cores).

    python examples/image_regression.py --out run.h5 --plot fig.png
    python examples/image_regression.py --image astronaut --size 256 --linear dense \
        --norm batch --encoding none --steps 2000
    python examples/image_regression.py --image photo.png --size 256
    python -m sciinr.distributed --processes 2 examples/image_regression.py \
        --distributed

Prints the final train and test PSNR. `--out` writes the HDF5 run file (read it with
plain h5py or `sciinr.io.load_run`); `--plot` writes target | prediction | error panels
and the PSNR curve.
"""

import os
import sys

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
from problems.image import ImageRegression, IMAGES


def parse_args(argv=None):
    parser = make_parser(__doc__)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--image",
        default="camera",
        help=f"a built-in image ({', '.join(sorted(IMAGES))}) or an image file",
    )
    data.add_argument("--size", type=int, default=128, help="image side N")
    data.add_argument(
        "--protocol", default="tancik", choices=["fit", "tancik", "superres"]
    )
    data.add_argument(
        "--batch-size", type=int, default=None, help="pixels per step (full batch)"
    )
    add_field_arguments(parser)
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    if args.image not in IMAGES and not os.path.isfile(args.image):
        parser.error(
            f"argument --image: invalid choice: {args.image!r} is neither a built-in "
            f"image (choose from {', '.join(sorted(IMAGES))}) nor an image file"
        )
    return args


def plot(path: str, result, problem, psnr_key: str = "psnr_test") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The compilation `fit` made for the run file is reused here.
    rendered = sciinr.predict(problem, result.field)
    image = np.clip(rendered["image"], 0.0, 1.0)
    target = rendered["target"]
    error = np.abs(image - target).mean(axis=-1)
    squeeze = (lambda a: a[..., 0]) if image.shape[-1] == 1 else (lambda a: a)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4), layout="constrained")
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    field_key, fit_key = jr.split(jr.key(args.seed))
    problem = ImageRegression(
        args.image, size=args.size, protocol=args.protocol, batch_size=args.batch_size
    )
    field = build_field(args, problem.in_size, problem.out_size, field_key)
    print(
        f"{args.image} {problem.size}x{problem.size} ({args.protocol}), "
        f"{sciinr.nn.num_parameters(field):,} parameters",
        file=sys.stderr,
    )
    result = sciinr.fit(
        problem,
        field,
        optax.adam(args.lr),
        steps=args.steps,
        key=fit_key,
        steps_per_call=min(args.steps_per_call, args.steps),
        eval_every=eval_every(args),
        output=args.out,
        mesh=mesh(args),
        progress=not args.no_progress,
        config=vars(args),
    )
    if args.plot and main_process():
        plot(args.plot, result, problem)
    print_metrics(result.metrics)
    if main_process():
        print(
            f"train PSNR {result.metrics['psnr_train']:.2f} dB, "
            f"test PSNR {result.metrics['psnr_test']:.2f} dB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

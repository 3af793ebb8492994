"""Spectral bias: test PSNR against the frequency of the signal, for chosen models.

Each model is fitted, with the same budget, to Perlin noise of octaves 1, 2, 4, ...
128 (that many lattice cells, so about that many periods, across a 256 x 256 image;
`problems.signals.perlin_noise`); the curve of PSNR against octave shows where each
model's low-frequency bias starts. Models are named as in `encoding_study.py`,
`<encoding>-<linear>-<norm>`:

    python examples/spectral_bias.py --out bias.h5 --plot bias.png
    python examples/spectral_bias.py --models none-dense-none,none-dense-batch,\
fourier-rwf-none,siren-dense-none --steps 1000

With the Tancik protocol (default) the networks train on the even pixels (a 128^2
grid, whose Nyquist limit is 64 periods per side) and are tested on the odd ones, so
octaves 64 and 128 are beyond what any model can interpolate: there the curves show
aliasing, not bias. `--protocol fit` trains and tests on every pixel (memorisation).

HDF5 layout: `/<model>/octave<k>` holds each run's `history`, `metrics` and
`predictions` (run-file layout of `sciinr.io`); `/psnr_test` and `/psnr_train` are
`(models, octaves)` tables with the `model` and `octave` axes as dimension scales.
A run whose loss becomes NaN/inf is recorded with PSNR NaN and `status = failed`.
"""

import os
import pathlib
import sys
import time

import jax.random as jr
import numpy as np
from _cli import parser as make_parser
from encoding_study import (
    adam,
    add_model_arguments,
    build,
    check_positive,
    ENCODINGS,
    field_key,
    finish_model_arguments,
    NORM_NAMES,
    Variant,
    write_run,
)

import sciinr
from problems.image import ImageRegression
from problems.signals import perlin_noise
from sciinr.nn import LINEARS


DEFAULT_MODELS = (
    "none-dense-none,none-rwf-none,none-dense-batch,fourier-dense-none,siren-dense-none"
)


def _model(parser, name: str) -> Variant:
    parts = name.split("-")
    valid = (ENCODINGS, tuple(LINEARS), NORM_NAMES)
    if len(parts) != 3 or any(p not in v for p, v in zip(parts, valid)):
        parser.error(
            f"argument --models: {name!r} is not <encoding>-<linear>-<norm> with "
            f"encoding in {', '.join(ENCODINGS)}, linear in {', '.join(LINEARS)}, "
            f"norm in {', '.join(NORM_NAMES)} (e.g. fourier-rwf-none)"
        )
    return Variant(*parts)


def parse_args(argv=None):
    parser = make_parser(__doc__)
    data = parser.add_argument_group("signals")
    data.add_argument(
        "--octaves", default="1,2,4,8,16,32,64,128", help="Perlin octaves"
    )
    data.add_argument("--size", type=int, default=256, help="image side N")
    data.add_argument("--protocol", default="tancik", choices=["fit", "tancik"])
    data.add_argument("--models", default=DEFAULT_MODELS)
    add_model_arguments(parser)
    train = parser.add_argument_group("training (every run)")
    train.add_argument("--steps", type=int, default=300)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--steps-per-call", type=int, default=100)
    train.add_argument("--seed", type=int, default=0, help="signals and models")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=None, help="HDF5 file")
    output.add_argument("--plot", default=None, help="figure (PNG)")
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not names:
        parser.error("argument --models: empty list")
    args.models = [_model(parser, name) for name in dict.fromkeys(names)]
    try:
        args.octaves = sorted({int(k) for k in args.octaves.split(",") if k.strip()})
    except ValueError:
        parser.error(f"argument --octaves: expected integers, got {args.octaves!r}")
    if not args.octaves or args.octaves[0] <= 0:
        parser.error("argument --octaves: expected positive integers")
    check_positive(parser, args, "size", "steps", "lr", "steps_per_call")
    finish_model_arguments(parser, args)
    args.eval_every = None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    signal_key = jr.fold_in(jr.key(args.seed), 1)
    try:
        problems = {
            k: ImageRegression(
                perlin_noise(args.size, k, key=jr.fold_in(signal_key, k)),
                protocol=args.protocol,
            )
            for k in args.octaves
        }
        for model in args.models:  # bad model flags fail before any training
            build(args, model, problems[args.octaves[0]], field_key(args.seed))
    except ValueError as err:
        print(f"{os.path.basename(__file__)}: error: {err}", file=sys.stderr)
        return 2
    shape = (len(args.models), len(args.octaves))
    psnr_test, psnr_train = np.full(shape, np.nan), np.full(shape, np.nan)
    runs = {}
    t_start = time.perf_counter()
    for i, model in enumerate(args.models):
        for j, octave in enumerate(args.octaves):
            problem = problems[octave]
            t0 = time.perf_counter()
            field = build(args, model, problem, field_key(args.seed))
            _, fit_key = jr.split(jr.key(args.seed))
            try:
                result = sciinr.fit(
                    problem, field, adam(args.lr), steps=args.steps,
                    key=fit_key, steps_per_call=min(args.steps_per_call, args.steps),
                    progress=False,
                )  # fmt: skip
            except sciinr.NonFiniteLossError as err:
                runs[(model.name, octave)] = None
                print(f"{model.name} octave {octave}: FAILED at step {err.step}")
                continue
            psnr_test[i, j] = result.metrics["psnr_test"]
            psnr_train[i, j] = result.metrics["psnr_train"]
            predictions = sciinr.predict(problem, result.field) if args.out else None
            runs[(model.name, octave)] = (result, predictions)
            print(
                f"{model.name} octave {octave:3d}: test {psnr_test[i, j]:6.2f} dB, "
                f"train {psnr_train[i, j]:6.2f} dB ({time.perf_counter() - t0:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"{len(runs)} runs in {time.perf_counter() - t_start:.0f} s, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        file=sys.stderr,
    )
    print("| model | " + " | ".join(f"octave {k}" for k in args.octaves) + " |")
    print("|---|" + "---|" * len(args.octaves))
    for i, model in enumerate(args.models):
        print(
            f"| {model.name} | " + " | ".join(f"{v:.2f}" for v in psnr_test[i]) + " |"
        )
    if args.out:
        write(args, problems, runs, psnr_test, psnr_train)
    if args.plot:
        plot(args, problems, psnr_test, psnr_train)
    return 0


def write(args, problems, runs, psnr_test, psnr_train) -> None:
    path = pathlib.Path(args.out)
    config = {k: v for k, v in vars(args).items() if k not in ("models", "octaves")}
    config["models"] = [m.name for m in args.models]
    config["octaves"] = list(args.octaves)
    with sciinr.io.atomic_h5(path, "spectral-bias file") as file:  # replaces at once
        file.attrs["format"] = "sciinr-spectral-bias"
        for (name, octave), run in runs.items():
            group = file.create_group(f"{name}/octave{octave}")
            if run is None:
                group.attrs["status"] = "failed"
                continue
            result, predictions = run
            write_run(
                group, result, predictions, problems[octave],
                {**config, "model": name, "octave": octave},
            )  # fmt: skip
            group.attrs["status"] = "done"
        model = file.create_dataset(
            "model", data=np.array([m.name for m in args.models], dtype="S")
        )
        octave = file.create_dataset("octave", data=np.asarray(args.octaves))
        model.make_scale("model")
        octave.make_scale("octave")
        for name, table in (("psnr_test", psnr_test), ("psnr_train", psnr_train)):
            dataset = file.create_dataset(name, data=table)
            dataset.attrs["units"] = "dB"
            dataset.dims[0].attach_scale(model)
            dataset.dims[1].attach_scale(octave)


def plot(args, problems, psnr_test, psnr_train) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(args.octaves)
    fig = plt.figure(figsize=(max(10, 1.4 * n), 7.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 3.2])
    thumbs = top.subplots(1, n, squeeze=False)[0]
    for ax, k in zip(thumbs, args.octaves):
        ax.imshow(np.asarray(problems[k].target)[..., 0], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"octave {k}", fontsize=9)
        ax.set_axis_off()
    ax = bottom.subplots()
    for i, model in enumerate(args.models):
        (line,) = ax.plot(args.octaves, psnr_test[i], "o-", label=f"{model.name}")
        ax.plot(args.octaves, psnr_train[i], ":", color=line.get_color())
    if args.protocol == "tancik":
        ax.axvline(args.size / 4, color="0.5", lw=1, ls="--")
        ax.text(
            args.size / 4, ax.get_ylim()[1], " training-grid Nyquist", va="top",
            fontsize=8, color="0.4",
        )  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(args.octaves, [str(k) for k in args.octaves])
    ax.set_xlabel("Perlin octave (periods across the image)")
    ax.set_ylabel("PSNR (dB): test solid, train dotted")
    ax.set_title(
        f"{args.size}² Perlin noise ({args.protocol}), {args.width}x{args.depth} "
        f"networks, {args.steps} steps, Adam {args.lr:g}"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(args.plot, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())

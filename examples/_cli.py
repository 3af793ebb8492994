"""What every example shares: the field flags, the field they build, training flags.

Each example is a thin CLI over the API: it adds its problem's flags to the parser
from `parser(...)`, builds its problem, and gets its field from `build_field(args,
in_size, out_size, key)`, so that every field (Fourier features, positional
encoding, RWF, normalization, SIREN, ...) is one flag away in every example.

Multi-process runs: `add_training_arguments` adds `--distributed`; the parser from
`parser(...)` then joins the run (`sciinr.distributed.initialize()`, from the
environment) as soon as the arguments are parsed, before any JAX computation. An
example passes `mesh=mesh(args)` to `sciinr.fit` (`None` without `--distributed`, so
single-process runs are unchanged) and writes figures only `if main_process()`.
"""

import argparse
import json
import sys

import jax
import jax.random as jr

from sciinr.nn import (
    ACTIVATIONS,
    CoordinateMLP,
    FourierFeatures,
    HEADS,
    LINEARS,
    MultiHeadField,
    NORMS,
    PositionalEncoding,
    Siren,
)


MODELS = ("mlp", "siren", "multihead")
ENCODINGS = ("fourier", "positional", "none")


class _Parser(argparse.ArgumentParser):
    """Joins the distributed run once the arguments say `--distributed`."""

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        if getattr(parsed, "distributed", False):
            import sciinr.distributed

            try:
                sciinr.distributed.initialize()
            except ValueError as err:  # nothing says how to start: a usage error
                self.error(f"argument --distributed: {err}")
        return parsed, extras


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose description is the first paragraph of `doc`.

    With `--distributed` (from `add_training_arguments`), parsing the arguments also
    initializes `jax.distributed` from the environment.
    """
    return _Parser(
        description=doc.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


def tiles(text: str) -> list[int]:
    """`--tiles`: `"8,4"` -> `[8, 4]`, `"8"` -> `[8, 8]` (an argparse type)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected 'Hx,Hy' or 'H' with positive ints, got {text!r}"
        )
    return values


def add_field_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """The flags of `build_field`; `defaults` overrides their defaults by name."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default="mlp",
        choices=MODELS,
        help="siren uses --width, --depth, --linear, --norm and --omega0 (no "
        "encoding or activation choice); multihead is a body of --width x --depth "
        "with every mlp option, plus --tiles, --heads, --alpha",
    )
    model.add_argument("--encoding", default="fourier", choices=ENCODINGS)
    model.add_argument("--features", type=int, default=256, help="Fourier features")
    model.add_argument("--sigma", type=float, default=3.0, help="Fourier scale")
    model.add_argument("--frequencies", type=int, default=8, help="positional L")
    model.add_argument("--linear", default="rwf", choices=sorted(LINEARS))
    model.add_argument("--norm", default="none", choices=["none", *sorted(NORMS)])
    model.add_argument("--activation", default="relu", choices=sorted(ACTIVATIONS))
    model.add_argument("--width", type=int, default=256)
    model.add_argument("--depth", type=int, default=4)
    model.add_argument("--omega0", type=float, default=30.0, help="SIREN frequency")
    model.add_argument("--rwf-mu", type=float, default=1.0, help="RWF scale mean")
    model.add_argument("--rwf-sigma", type=float, default=0.1, help="RWF scale std")
    model.add_argument(
        "--tiles",
        type=tiles,
        default=[8, 8],
        help="multihead: tiles (heads) per axis, 'Hx,Hy' or 'H'",
    )
    model.add_argument(
        "--heads", default="dense", choices=sorted(HEADS), help="multihead heads"
    )
    model.add_argument(
        "--alpha",
        type=int,
        default=None,
        help="multihead: body neurons per sparse head (required for sparse)",
    )
    model.add_argument(
        "--no-head-bias",
        action="store_true",
        help="multihead: heads without bias (the authors' experiments)",
    )
    parser.set_defaults(**defaults)


def add_training_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """`--steps --lr --steps-per-call --eval-every --seed --no-progress --distributed
    --out --plot`; `defaults` overrides their defaults by name."""
    train = parser.add_argument_group("training")
    train.add_argument("--steps", type=int, default=500)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--steps-per-call", type=int, default=100)
    train.add_argument("--eval-every", type=int, default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-progress", action="store_true")
    train.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run (jax.distributed, set up from the "
        "environment: SLURM srun, Open MPI mpirun, or python -m sciinr.distributed) "
        "and train data-parallel over the devices of every process",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=None, help="HDF5 run file")
    output.add_argument("--plot", default=None, help="figure (PNG)")
    parser.set_defaults(**defaults)


def build_field(args: argparse.Namespace, in_size: int, out_size: int, key):
    """The field the flags of `add_field_arguments` describe."""
    encoding_key, field_key = jr.split(key)
    norm = None if args.norm == "none" else args.norm
    rwf = dict(rwf_mu=args.rwf_mu, rwf_sigma=args.rwf_sigma)
    if args.model == "siren":
        siren_norm = {} if norm is None else {"norm": norm}
        return Siren(
            in_size,
            out_size,
            args.width,
            args.depth,
            omega0=args.omega0,
            linear=args.linear,
            **siren_norm,
            **rwf,
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
    if args.model == "multihead":
        return MultiHeadField(
            in_size,
            out_size,
            tuple(args.tiles),
            args.width,
            args.depth,
            heads=args.heads,
            alpha=args.alpha,
            encoding=encoding,
            activation=args.activation,
            linear=args.linear,
            norm=norm,
            head_bias=not args.no_head_bias,
            **rwf,
            key=field_key,
        )
    return CoordinateMLP(
        in_size,
        out_size,
        args.width,
        args.depth,
        encoding=encoding,
        activation=args.activation,
        linear=args.linear,
        norm=norm,
        **rwf,
        key=field_key,
    )


def eval_every(args: argparse.Namespace) -> int | None:
    """`--eval-every`, or about ten evaluations when a figure is asked for."""
    if args.eval_every is not None or not args.plot:
        return args.eval_every
    steps_per_call = min(args.steps_per_call, args.steps)
    return steps_per_call * max(1, args.steps // (10 * steps_per_call))


def mesh(args: argparse.Namespace) -> jax.sharding.Mesh | None:
    """The mesh to pass to `sciinr.fit`: over the devices of every process with
    `--distributed`, else `None` (one device, as without the flag)."""
    if not getattr(args, "distributed", False):
        return None
    if not jax.distributed.is_initialized():
        raise RuntimeError(
            "--distributed was given but jax.distributed is not initialized: build "
            "the parser with `_cli.parser(...)`, which initializes it when parsing."
        )
    return jax.make_mesh((jax.device_count(),), ("data",))


def main_process() -> bool:
    """Whether this process writes figures and prints (process 0; always true in a
    single-process run)."""
    return jax.process_index() == 0


def print_metrics(metrics: dict[str, float]) -> None:
    """The final metrics as one JSON line on stdout (what the tests read); on the
    main process only."""
    if not main_process():
        return
    print(json.dumps({k: round(v, 6) for k, v in metrics.items()}))
    sys.stdout.flush()

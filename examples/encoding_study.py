"""The representation study: encoding x linear layer x normalization, in one command.

Trains every cell of the grid image x encoding x linear x norm x seed with the same
budget (full-batch Adam, the same steps, Tancik protocol by default) and writes one
HDF5 file with a run group per cell and a `/summary` table. Defaults (192 cells):

    python examples/encoding_study.py --out study.h5 --plot study.png
    python examples/encoding_study.py --images camera,astronaut --size 128 \
        --protocol tancik --steps 1000 --seeds 3 \
        --encodings none,positional,fourier,siren --linears dense,rwf \
        --norms none,batch,layer,rms --width 128 --depth 4 --lr 1e-3 \
        --out study.h5 --plot study.png
    python examples/encoding_study.py --lr-sweep 3e-4,1e-3,3e-3,1e-2 ...
    python examples/encoding_study.py --paper ...   # 4 x 256, 512^2 (GPU)

Encodings: `none` (ReLU MLP on the raw coordinates), `positional` (NeRF-style
`sin/cos(2^k pi x)`, k = 0 ... L-1, plus x), `fourier` (Gaussian Fourier features,
Tancik et al.), `siren` (a SIREN instead of a ReLU MLP). Linears: `dense` (Glorot) or
`rwf` (random weight factorization). Norms: `none`, `batch` (over the coordinates),
`layer`, `rms`. Cells built from the same seed share their initial keys, so dense and
RWF cells start from the same function.

`--lr-sweep` first trains each variant (per image, seed 0) for `--sweep-steps` steps
at every rate and keeps the rate with the best final *training* PSNR (the test pixels
are never used to choose); the rate used is stored per cell.

HDF5 layout: `/<image>/<encoding>-<linear>-<norm>/seed<k>` holds that run's
`history`, `metrics` and `predictions` in the run-file layout of `sciinr.io`, and
attributes `status` (`done` or `failed`), `step`, `learning_rate` and `wall_time`;
`/summary` is a table of every cell. A cell whose loss becomes NaN/inf is recorded as
`failed` at its step and the grid goes on. Re-running with the same `--out` skips the
cells already in the file (`--retry-failed` re-runs the failed ones); the file is
updated atomically after every cell (a copy is written, then renamed), so an
interrupted study resumes where it stopped. Run one process per `--out`.
"""

import argparse
import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time

import h5py
import jax.random as jr
import numpy as np
import optax
from _cli import build_field, parser as make_parser

import sciinr
from problems.image import ImageRegression, IMAGES
from sciinr.nn import ACTIVATIONS, LINEARS, NORMS


ENCODINGS = ("none", "positional", "fourier", "siren")
NORM_NAMES = ("none", *NORMS)

# Settings that change what a cell computes: a file written with other values cannot
# be resumed (the grid lists may grow: new images, variants or seeds are fine).
CELL_SETTINGS = (
    "size",
    "protocol",
    "steps",
    "width",
    "depth",
    "features",
    "sigma",
    "frequencies",
    "omega0",
    "activation",
    "rwf_mu",
    "rwf_sigma",
    "lr",
    "lr_sweep",
    "sweep_steps",
)

PAPER = dict(size=512, width=256, steps=2000)
"""`--paper`: Tancik et al.'s image regression (512^2 images, 4 x 256, 2000 steps)."""


# --------------------------------------------------------------------------------------
# Flags
# --------------------------------------------------------------------------------------


def _names(parser, flag: str, text: str, valid) -> list[str]:
    """A comma-separated list of names, each one of `valid`, without repeats."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        parser.error(
            f"argument {flag}: empty list, so the grid would be empty (choose from "
            f"{', '.join(valid)})"
        )
    for name in names:
        if name not in valid:
            parser.error(
                f"argument {flag}: unknown name {name!r} (choose from "
                f"{', '.join(valid)})"
            )
    return list(dict.fromkeys(names))


def _rates(parser, flag: str, text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        parser.error(f"argument {flag}: expected comma-separated numbers, got {text!r}")
    if not rates or not all(math.isfinite(r) and r > 0 for r in rates):
        parser.error(f"argument {flag}: expected positive learning rates, got {text!r}")
    return list(dict.fromkeys(rates))


def check_positive(parser, args, *names) -> None:
    """`parser.error` unless each of the flags `names` is `None` or positive."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            flag = "--" + name.replace("_", "-")
            parser.error(f"argument {flag}: must be positive, got {value}")


def add_model_arguments(parser) -> None:
    """The flags of every model in the grid (also used by `spectral_bias.py`)."""
    model = parser.add_argument_group("model (every cell)")
    model.add_argument("--width", type=int, default=128)
    model.add_argument("--depth", type=int, default=4)
    model.add_argument("--features", type=int, default=256, help="Fourier features")
    model.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="Fourier scale; default 10 * size / 512 (Tancik's 10 at 512^2)",
    )
    model.add_argument(
        "--frequencies",
        type=int,
        default=None,
        help="positional L; default log2(size) - 2 (highest frequency size / 16 "
        "cycles, the 3-sigma reach of the Fourier features)",
    )
    model.add_argument("--omega0", type=float, default=30.0, help="SIREN frequency")
    model.add_argument("--activation", default="relu", help="of the ReLU-MLP cells")
    model.add_argument("--rwf-mu", type=float, default=1.0)
    model.add_argument("--rwf-sigma", type=float, default=0.1)


def finish_model_arguments(parser, args) -> None:
    """Check the model flags and fill in the defaults that follow `--size`."""
    check_positive(parser, args, "width", "features", "sigma", "frequencies", "omega0")
    if args.depth < 0:
        parser.error(f"argument --depth: must be >= 0, got {args.depth}")
    if args.activation not in ACTIVATIONS:
        parser.error(
            f"argument --activation: unknown name {args.activation!r} (choose from "
            f"{', '.join(ACTIVATIONS)})"
        )
    if args.sigma is None:
        args.sigma = 10.0 * args.size / 512
    if args.frequencies is None:
        args.frequencies = max(1, round(math.log2(args.size)) - 2)


def parse_args(argv=None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    grid = parser.add_argument_group("grid")
    grid.add_argument(
        "--images", default="camera,astronaut", help=f"from {', '.join(IMAGES)}"
    )
    grid.add_argument("--encodings", default=",".join(ENCODINGS))
    grid.add_argument("--linears", default=",".join(LINEARS))
    grid.add_argument("--norms", default=",".join(NORM_NAMES))
    grid.add_argument("--seeds", type=int, default=3, help="seeds 0 ... SEEDS-1")
    grid.add_argument("--size", type=int, default=128, help="image side N")
    grid.add_argument(
        "--protocol", default="tancik", choices=["fit", "tancik", "superres"]
    )
    grid.add_argument(
        "--paper",
        action="store_true",
        help=f"the paper-sized grid: {PAPER} unless given (GPU; untimed on CPU)",
    )
    add_model_arguments(parser)
    train = parser.add_argument_group("training (every cell)")
    train.add_argument("--steps", type=int, default=1000)
    rate = train.add_mutually_exclusive_group()
    rate.add_argument("--lr", type=float, default=None, help="Adam rate (1e-3)")
    rate.add_argument(
        "--lr-sweep", default=None, help="comma-separated rates to choose from"
    )
    train.add_argument(
        "--sweep-steps", type=int, default=None, help="default: steps // 10"
    )
    train.add_argument("--steps-per-call", type=int, default=100)
    train.add_argument(
        "--eval-every", type=int, default=None, help="default: about 10 per run"
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", default="study.h5", help="HDF5 file (resumable)")
    output.add_argument("--plot", default=None, help="figure (PNG)")
    output.add_argument(
        "--retry-failed", action="store_true", help="re-run cells recorded as failed"
    )

    args = parser.parse_args(argv)
    if args.paper:  # the paper's sizes become the defaults; explicit flags still win
        parser.set_defaults(**PAPER)
        args = parser.parse_args(argv)
    args.images = _names(parser, "--images", args.images, list(IMAGES))
    args.encodings = _names(parser, "--encodings", args.encodings, ENCODINGS)
    args.linears = _names(parser, "--linears", args.linears, list(LINEARS))
    args.norms = _names(parser, "--norms", args.norms, NORM_NAMES)
    check_positive(parser, args, "seeds", "size", "steps", "steps_per_call")
    check_positive(parser, args, "sweep_steps", "eval_every", "lr")
    finish_model_arguments(parser, args)
    if args.lr_sweep is not None:
        args.lr_sweep = _rates(parser, "--lr-sweep", args.lr_sweep)
        if args.sweep_steps is None:
            args.sweep_steps = max(1, args.steps // 10)
    elif args.lr is None:
        args.lr = 1e-3
    if args.eval_every is None:
        chunk = min(args.steps_per_call, args.steps)
        args.eval_every = chunk * max(1, args.steps // (10 * chunk))
    elif args.eval_every % min(args.steps_per_call, args.steps):
        parser.error("argument --eval-every: must be a multiple of --steps-per-call")
    return args


# --------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    encoding: str
    linear: str
    norm: str

    @property
    def name(self) -> str:
        return f"{self.encoding}-{self.linear}-{self.norm}"


def variants(args) -> list[Variant]:
    return [
        Variant(*v) for v in itertools.product(args.encodings, args.linears, args.norms)
    ]


def cell_name(image: str, variant: Variant, seed: int) -> str:
    return f"{image}/{variant.name}/seed{seed}"


def build(args, variant: Variant, problem: ImageRegression, key):
    """The field of `variant`, through the examples' shared `build_field`."""
    flags = dict(vars(args))
    flags.update(
        model="siren" if variant.encoding == "siren" else "mlp",
        encoding="none" if variant.encoding == "siren" else variant.encoding,
        linear=variant.linear,
        norm=variant.norm,
    )
    return build_field(
        argparse.Namespace(**flags), problem.in_size, problem.out_size, key
    )


@functools.cache
def adam(lr: float) -> optax.GradientTransformation:
    """Adam at rate `lr`, built once per rate.

    `fit`'s compiled step is cached on the optimizer object (its functions are static
    arguments), so reusing one object lets every cell with the same problem shapes,
    field structure and rate reuse one compilation (across calls of `run_grid` too).
    `inject_hyperparams` records the rate in every cell's history."""
    return optax.inject_hyperparams(
        optax.adam, static_args=("b1", "b2", "eps", "eps_root")
    )(learning_rate=lr)


def train_cell(args, problem, field, optimizer, seed: int, *, steps: int, predict=True):
    """Fit one cell; returns `(result, predictions)` (raises NonFiniteLossError)."""
    _, fit_key = jr.split(jr.key(seed))
    chunk = min(args.steps_per_call, steps)
    result = sciinr.fit(
        problem,
        field,
        optimizer,
        steps=steps,
        key=fit_key,
        steps_per_call=chunk,
        eval_every=args.eval_every if steps == args.steps else None,
        progress=False,
    )
    predictions = sciinr.predict(problem, result.field) if predict else None
    return result, predictions


def field_key(seed: int):
    """The key every cell with this seed builds its field from (shared by variants)."""
    return jr.split(jr.key(seed))[0]


# --------------------------------------------------------------------------------------
# The HDF5 file: a run group per cell, a /summary table, atomic updates
# --------------------------------------------------------------------------------------


SUMMARY_DTYPE = np.dtype(
    [
        ("image", "S32"),
        ("encoding", "S16"),
        ("linear", "S8"),
        ("norm", "S8"),
        ("seed", "i4"),
        ("status", "S8"),
        ("step", "i8"),
        ("learning_rate", "f8"),
        ("psnr_test", "f8"),
        ("psnr_train", "f8"),
        ("wall_time", "f8"),
    ]
)


@contextlib.contextmanager
def atomic_update(path: pathlib.Path, *, fresh: bool = False):
    """Open a copy of `path` (a new file if it does not exist, or with `fresh`) for
    writing; rename it onto `path` when the block succeeds, so that `path` is never
    seen half-written (as `sciinr.io.save_run` does for a whole run file). On an
    error the copy is removed and `path` keeps its previous content.

    `sciinr.io.atomic_h5` writes a new file; the study file grows cell by cell, so
    this starts from a byte copy of the old file (everything in it kept exactly,
    dimension scales included) and renames the same way."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        existed = path.exists() and not fresh
        if existed:
            shutil.copyfile(path, tmp)
        # HDF5 1.8 object headers, as `sciinr.io`: long attributes (a field's repr)
        # need dense attribute storage.
        with h5py.File(tmp, "a" if existed else "w", libver=("v108", "latest")) as f:
            yield f
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_run(group: h5py.Group, result, predictions, problem, config) -> None:
    """That run in the run-file layout (`sciinr.io.write_run`): history, metrics,
    predictions with their coordinates, the trained field (`/params`, `/model`)."""
    sciinr.io.write_run(
        group,
        result.field,
        history=result.history,
        metrics=result.metrics,
        predictions=predictions,
        # Passed as the dict itself: `jax.device_get` of a dict sorts its keys, and
        # the coordinates' order says which axis each one labels.
        coordinates={k: np.asarray(v) for k, v in problem.coordinates().items()},
        config=config,
        problem=type(problem).__qualname__,
        seed=config.get("seed"),
    )


class StudyFile:
    """The study's HDF5 file: what is finished, and atomic per-cell updates."""

    def __init__(self, path: str, settings: dict):
        self.path = pathlib.Path(path)
        self.settings = settings
        self.rows: dict[str, np.void] = {}
        self.sweeps: dict[str, float] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            file = h5py.File(self.path, "r")
        except OSError as err:
            raise SystemExit(
                f"error: --out {self.path} exists but is not an HDF5 file ({err}). "
                "Pass another --out."
            ) from None
        with file:
            saved = json.loads(file.attrs.get("settings", "{}"))
            changed = {
                k: (saved.get(k), v)
                for k, v in self.settings.items()
                if saved.get(k) != v
            }
            if changed:
                what = ", ".join(
                    f"{k}: file {a!r}, now {b!r}" for k, (a, b) in changed.items()
                )
                raise SystemExit(
                    f"error: --out {self.path} holds a study with other settings "
                    f"({what}); its cells cannot be resumed. Pass another --out or "
                    "the same settings."
                )
            if "summary" in file:
                for row in file["summary"][()]:
                    self.rows[_row_name(row)] = row
            for name, group in file.items():
                if isinstance(group, h5py.Group):
                    for variant, sub in group.items():
                        if "learning_rate" in sub.attrs:
                            self.sweeps[f"{name}/{variant}"] = float(
                                sub.attrs["learning_rate"]
                            )

    def status(self, name: str) -> str | None:
        """`"done"`, `"failed"`, or `None` for a cell not in the file."""
        row = self.rows.get(name)
        return None if row is None else row["status"].decode()

    def to_run(self, name: str, retry_failed: bool) -> bool:
        status = self.status(name)
        return status is None or (retry_failed and status == "failed")

    def _write(self, file: h5py.File) -> None:
        file.attrs["settings"] = json.dumps(self.settings)
        file.attrs["format"] = "sciinr-study"
        if "summary" in file:
            del file["summary"]
        table = np.array(list(self.rows.values()), SUMMARY_DTYPE)
        file.create_dataset("summary", data=table)

    def add_sweep(self, variant_path: str, rates, scores, chosen: float) -> None:
        with atomic_update(self.path) as file:
            group = file.require_group(variant_path)
            group.attrs["lr_sweep_rates"] = np.asarray(rates, float)
            group.attrs["lr_sweep_psnr_train"] = np.asarray(scores, float)
            group.attrs["learning_rate"] = chosen
            self._write(file)
        self.sweeps[variant_path] = chosen

    def add_cell(self, name, row, write_group) -> None:
        with atomic_update(self.path) as file:
            if name in file:
                del file[name]
            group = file.create_group(name)
            write_group(group)
            self.rows[name] = row
            self._write(file)


def _row_name(row) -> str:
    variant = Variant(*(row[k].decode() for k in ("encoding", "linear", "norm")))
    return cell_name(row["image"].decode(), variant, int(row["seed"]))


def make_row(image, variant, seed, status, step, lr, metrics, wall):
    return np.array(
        (
            image,
            variant.encoding,
            variant.linear,
            variant.norm,
            seed,
            status,
            step,
            lr,
            metrics.get("psnr_test", np.nan),
            metrics.get("psnr_train", np.nan),
            wall,
        ),
        SUMMARY_DTYPE,
    )[()]


# --------------------------------------------------------------------------------------
# Running the grid
# --------------------------------------------------------------------------------------


def sweep(args, problem, variant) -> tuple[list[float], list[float]]:
    """The final training PSNR of a short run (seed 0) at every rate of --lr-sweep."""
    scores = []
    for lr in args.lr_sweep:
        field = build(args, variant, problem, field_key(0))
        try:
            result, _ = train_cell(
                args, problem, field, adam(lr), 0, steps=args.sweep_steps,
                predict=False,
            )  # fmt: skip
            scores.append(result.metrics["psnr_train"])
        except sciinr.NonFiniteLossError:
            scores.append(-np.inf)
    return list(args.lr_sweep), scores


def prepare(args) -> dict[str, ImageRegression]:
    """The problem of every image, after building one field of every variant, so
    that bad flags fail here, before any training (`ValueError`)."""
    problems = {
        image: ImageRegression(image, size=args.size, protocol=args.protocol)
        for image in args.images
    }
    for problem in problems.values():
        for variant in variants(args):
            build(args, variant, problem, field_key(0))
    return problems


def run_grid(args, problems=None, log=print) -> StudyFile:
    """Train every missing cell of the grid; returns the study file.

    Seed by seed: every variant's seed 0 first, then seed 1, ..., so that an
    interrupted study already covers every variant. The compiled steps of all
    variants stay cached in the process, so this order compiles no more than
    variant by variant would."""
    settings = {k: getattr(args, k) for k in CELL_SETTINGS}
    if problems is None:
        problems = prepare(args)
    grid = variants(args)
    study = StudyFile(args.out, settings)
    total = len(problems) * len(grid) * args.seeds
    done = itertools.count(1)
    for seed in range(args.seeds):
        for image, problem in problems.items():
            for variant in grid:
                name = cell_name(image, variant, seed)
                count = f"[{next(done):{len(str(total))}d}/{total}]"
                if not study.to_run(name, args.retry_failed):
                    log(f"{count} {name}: {study.status(name)} earlier, skipped")
                    continue
                lr = args.lr
                if args.lr_sweep is not None:
                    lr = learning_rate(args, study, problem, image, variant, log)
                log(run_cell(args, study, problem, image, variant, seed, lr, count))
    return study


def learning_rate(args, study, problem, image, variant, log) -> float:
    """The rate `--lr-sweep` chose for `variant` on `image`, sweeping it first if
    the file does not hold it yet."""
    path = f"{image}/{variant.name}"
    if path not in study.sweeps:
        t0 = time.perf_counter()
        rates, scores = sweep(args, problem, variant)
        best = rates[int(np.argmax(scores))]
        study.add_sweep(path, rates, scores, best)
        log(
            f"        {path}: lr sweep "
            + ", ".join(f"{r:g} -> {s:.2f} dB" for r, s in zip(rates, scores))
            + f"; using {best:g} ({time.perf_counter() - t0:.1f} s)"
        )
    return study.sweeps[path]


def run_cell(args, study, problem, image, variant, seed, lr, count) -> str:
    """Train one cell and add it to the study file; returns its progress line."""
    name = cell_name(image, variant, seed)
    config = {
        **{k: v for k, v in vars(args).items() if k in CELL_SETTINGS},
        "image": image,
        "encoding": variant.encoding,
        "linear": variant.linear,
        "norm": variant.norm,
        "seed": seed,
        "learning_rate": lr,
    }
    t0 = time.perf_counter()
    field = build(args, variant, problem, field_key(seed))
    try:
        result, predictions = train_cell(
            args, problem, field, adam(lr), seed, steps=args.steps
        )
        failure = None
    except sciinr.NonFiniteLossError as err:
        result, predictions, failure = None, None, err
    wall = time.perf_counter() - t0

    if failure is not None:
        attrs = dict(
            status="failed", step=failure.step, learning_rate=lr, wall_time=wall,
            error=str(failure), config=json.dumps(config),
        )  # fmt: skip
        row = make_row(image, variant, seed, "failed", failure.step, lr, {}, wall)
        study.add_cell(name, row, lambda group: group.attrs.update(attrs))
        return (
            f"{count} {name}: FAILED at step {failure.step} (non-finite "
            f"{failure.term}), lr {lr:g}, {wall:5.1f} s"
        )

    def write_done(group):
        write_run(group, result, predictions, problem, config)
        group.attrs.update(
            status="done", step=result.step, learning_rate=lr, wall_time=wall
        )

    row = make_row(image, variant, seed, "done", result.step, lr, result.metrics, wall)
    study.add_cell(name, row, write_done)
    m = result.metrics
    return (
        f"{count} {name}: test {m['psnr_test']:6.2f} dB, train {m['psnr_train']:6.2f} "
        f"dB, lr {lr:g}, {wall:5.1f} s"
    )


# --------------------------------------------------------------------------------------
# Reading the results: table and figure
# --------------------------------------------------------------------------------------


def read_summary(path) -> np.ndarray:
    with h5py.File(path, "r") as file:
        return file["summary"][()]


def by_seed(summary: np.ndarray, image: str, variant: Variant) -> dict[int, float]:
    """`{seed: test PSNR}` of the finished cells of one variant on one image."""
    rows = summary[
        (summary["image"] == image.encode())
        & (summary["encoding"] == variant.encoding.encode())
        & (summary["linear"] == variant.linear.encode())
        & (summary["norm"] == variant.norm.encode())
        & (summary["status"] == b"done")
    ]
    return {int(r["seed"]): float(r["psnr_test"]) for r in rows}


def _spread(values) -> str:
    """`mean ± std` (sample std over seeds), or the one value."""
    values = np.asarray(list(values), float)
    if not len(values):
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def table(summary: np.ndarray, args) -> str:
    """Markdown tables of the test PSNR: per variant and image (mean ± std over
    seeds, the rate used, failures), and the paired differences RWF - dense and
    norm - no norm (same seed, hence the same initial function or keys)."""

    def failed(image, variant) -> str:
        rows = summary[
            (summary["image"] == image.encode())
            & (summary["encoding"] == variant.encoding.encode())
            & (summary["linear"] == variant.linear.encode())
            & (summary["norm"] == variant.norm.encode())
        ]
        n = int((rows["status"] == b"failed").sum())
        rates = sorted({float(r) for r in rows["learning_rate"]})
        lr = f" (lr {', '.join(f'{r:g}' for r in rates)})" if args.lr_sweep else ""
        return lr + (f" ({n} failed)" if n else "")

    def paired(image, a: Variant, b: Variant):
        pa, pb = by_seed(summary, image, a), by_seed(summary, image, b)
        return [pa[k] - pb[k] for k in sorted(pa.keys() & pb.keys())]

    head = " | ".join(args.images)
    out = [
        "Test PSNR (dB), mean ± std over seeds:",
        "",
        f"| variant | {head} |",
        "|---|" + "---|" * len(args.images),
    ]
    for variant in variants(args):
        cells = [
            _spread(by_seed(summary, im, variant).values()) + failed(im, variant)
            for im in args.images
        ]
        out.append(f"| {variant.name} | " + " | ".join(cells) + " |")
    if {"dense", "rwf"} <= set(args.linears):
        out += [
            "",
            "RWF - dense (dB), paired by seed, mean ± std:",
            "",
            f"| encoding-norm | {head} |",
            "|---|" + "---|" * len(args.images),
        ]
        for encoding, norm in itertools.product(args.encodings, args.norms):
            rwf, dense = (
                Variant(encoding, "rwf", norm),
                Variant(encoding, "dense", norm),
            )
            cells = [_spread(paired(im, rwf, dense)) for im in args.images]
            out.append(f"| {encoding}-{norm} | " + " | ".join(cells) + " |")
    if "none" in args.norms and len(args.norms) > 1:
        out += [
            "",
            "Norm - no norm (dB), paired by seed, mean ± std:",
            "",
            f"| variant | {head} |",
            "|---|" + "---|" * len(args.images),
        ]
        for variant in variants(args):
            if variant.norm == "none":
                continue
            plain = Variant(variant.encoding, variant.linear, "none")
            cells = [_spread(paired(im, variant, plain)) for im in args.images]
            out.append(f"| {variant.name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def test_pixels(group: h5py.Group, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """A cell's prediction and target on its test pixels, as images: the odd pixels
    `[1::2, 1::2]` for the Tancik protocol, the rendered grid otherwise."""
    pred = group["predictions/image"][()]
    target = group["predictions/target"][()]
    if protocol == "tancik":
        return pred[1::2, 1::2], target[1::2, 1::2]
    return pred, target


def best_cells(summary: np.ndarray, image: str) -> dict[str, str]:
    """The cell name with the best test PSNR for every encoding, on `image`."""
    best = {}
    rows = summary[
        (summary["image"] == image.encode()) & (summary["status"] == b"done")
    ]
    for encoding in ENCODINGS:
        sub = rows[rows["encoding"] == encoding.encode()]
        if len(sub):
            row = sub[int(np.argmax(sub["psnr_test"]))]
            best[encoding] = _row_name(row)
    return best


def plot(path: str, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = read_summary(args.out)
    grid = variants(args)
    colors = dict(zip(NORM_NAMES, ["0.35", "C0", "C1", "C2"]))
    fig, axes = plt.subplots(
        len(args.images), 2, figsize=(16, 4.5 * len(args.images)),
        gridspec_kw={"width_ratios": [2.2, 1]}, squeeze=False, layout="constrained",
    )  # fmt: skip
    for row, image in enumerate(args.images):
        ax = axes[row, 0]
        for i, variant in enumerate(grid):
            sel = summary[
                (summary["image"] == image.encode())
                & (summary["encoding"] == variant.encoding.encode())
                & (summary["linear"] == variant.linear.encode())
                & (summary["norm"] == variant.norm.encode())
                & (summary["status"] == b"done")
            ]
            if not len(sel):
                continue
            marker = "o" if variant.linear == "dense" else "s"
            ax.scatter(
                np.full(len(sel), i), sel["psnr_test"], marker=marker,
                color=colors[variant.norm], s=22, alpha=0.8,
            )  # fmt: skip
            ax.hlines(sel["psnr_test"].mean(), i - 0.35, i + 0.35, color="k", lw=1)
        ax.set_xticks(range(len(grid)), [v.name for v in grid], rotation=75, fontsize=8)
        ax.set_ylabel("test PSNR (dB)")
        ax.set_title(f"{image}, {args.size}², {args.steps} steps ({args.protocol})")
        ax.grid(alpha=0.3, axis="y")
        handles = [
            plt.Line2D([], [], ls="", marker="o", color=c, label=f"norm {n}")
            for n, c in colors.items() if n in args.norms
        ] + [
            plt.Line2D([], [], ls="", marker=m, color="k", label=f"{lin}", mfc="none")
            for lin, m in (("dense", "o"), ("rwf", "s")) if lin in args.linears
        ]  # fmt: skip
        ax.legend(handles=handles, fontsize=8, ncol=2)
        ax = axes[row, 1]
        with h5py.File(args.out, "r") as file:
            for encoding, name in best_cells(summary, image).items():
                pred, target = test_pixels(file[name], args.protocol)
                freq, power = sciinr.metrics.error_spectrum(pred, target)
                freq = np.asarray(freq) * pred.shape[0]  # cycles per image side
                psnr = file[f"{name}/metrics"].attrs["psnr_test"]
                label = f"{name.split('/', 1)[1]} ({psnr:.2f} dB)"
                ax.loglog(np.asarray(freq)[1:], np.asarray(power)[1:], label=label)
        ax.set_xlabel("spatial frequency (cycles per image side)")
        ax.set_ylabel("error power")
        ax.set_title(f"{image}: test-pixel error spectrum, best cell per encoding")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        problems = prepare(args)
    except ValueError as err:
        print(f"{os.path.basename(__file__)}: error: {err}", file=sys.stderr)
        return 2
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    run_grid(args, problems, log=log)
    summary = read_summary(args.out)
    print(table(summary, args))
    failed = int((summary["status"] == b"failed").sum())
    print(
        f"{len(summary)} cells in {args.out} ({failed} failed); this run took "
        f"{time.perf_counter() - t0:.0f} s, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        file=sys.stderr,
    )
    if args.plot:
        plot(args.plot, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Solve a PDE with a physics-informed network (PINN) and compare with the reference.

Built-in PDEs (`--pde`): allen_cahn, advection, burgers, poisson, helmholtz, each with
a reference solution computed by the package. The default field is a tanh MLP with
random weight factorization on Gaussian Fourier features (and, for periodic PDEs, a
periodic embedding of x first); the loss is balanced by gradient norms, and
time-dependent PDEs use causal weighting. Adam with exponential decay, optionally
followed by L-BFGS (`--lbfgs-steps`). CPU defaults (measured on 2 cores, see
docs/problems/pinn.md): 3 x 128 for Poisson and Helmholtz (rel. L2 about 2e-3 and
5e-3 in two minutes); for Allen-Cahn and Burgers 4 x 128, the initial condition
imposed exactly (`--hard-initial`), causal epsilon 10 and 20,000 steps (Allen-Cahn
5e-3 in about six minutes, Burgers 2e-2 in about seven); 4 x 256 and 1000 steps
for advection (c = 80 needs far more).

    python examples/pinn.py --pde poisson --out run.h5 --plot fig.png  # ~2 min
    python examples/pinn.py --pde helmholtz                            # ~2 min
    python examples/pinn.py --pde allen_cahn --out ac.h5 --plot ac.png  # ~6 min
    python examples/pinn.py --pde burgers                              # ~7 min
    python examples/pinn.py --pde poisson --lbfgs-steps 500 --float64
    python examples/pinn.py --pde allen_cahn --paper   # jaxpi's budget (GPU)

Prints the final metrics (`rel_l2`) as JSON. `--out` writes the HDF5 run file (history
of loss terms and weights, prediction, reference and error on the reference grid with
t/x/y coordinates); `--plot` a figure: prediction, reference, error, loss terms and
weights.
"""

import argparse
import math
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
from problems.pinn import Causal, FixedWeights, GradNorm, PDES
from sciinr.nn import CoordinateMLP, FourierFeatures, PeriodicEmbedding


# Per-PDE defaults: CPU runs of a few minutes (2 cores), and the published budgets
# of the jaxpi guide for `--paper` (GPU; untimed on CPU). `sigma` is the standard
# deviation of the Fourier frequencies in cycles per unit (jaxpi's `embed_scale` is
# in radians: sigma = embed_scale / 2 pi).
DEFAULTS = {
    "poisson": dict(
        steps=2000, collocation=1024, sigma=0.5, decay_steps=500, width=128, depth=3
    ),
    "helmholtz": dict(
        steps=1500, collocation=1024, sigma=1.0, decay_steps=300, width=128, depth=3,
        weights_every=500,
    ),
    # Allen-Cahn and Burgers: the initial condition imposed exactly and a stronger
    # causal epsilon (Allen-Cahn: rel. L2 5e-3 in 6 minutes; docs/problems/pinn.md).
    "allen_cahn": dict(
        steps=20_000, collocation=1024, sigma=0.3, decay_steps=1000, width=128,
        hard_initial=True, causal_eps=10.0,
    ),
    "advection": dict(
        steps=1000, collocation=1024, sigma=0.16, decay_steps=1000, hard_initial=False
    ),
    "burgers": dict(
        steps=20_000, collocation=1024, sigma=0.5, decay_steps=1000, width=128,
        hard_initial=True, causal_eps=10.0,
    ),
}  # fmt: skip
for _settings in DEFAULTS.values():
    _settings.setdefault("width", 256)
    _settings.setdefault("depth", 4)
    _settings.setdefault("weights_every", 1000)
    _settings.setdefault("causal_eps", 1.0)
# jaxpi's settings for every PDE: networks (4 x 256), grad-norm refresh (every 1000
# steps), and for the time-dependent ones the initial condition as a loss term with
# causal epsilon 1.
_PAPER_COMMON = dict(
    width=256, depth=4, weights_every=1000, causal_eps=1.0, hard_initial=False
)
PAPER = {
    "poisson": dict(steps=100_000, collocation=8192, decay_steps=5000),
    "helmholtz": dict(steps=100_000, collocation=8192, decay_steps=5000),
    "allen_cahn": dict(
        steps=300_000, collocation=8192, sigma=2.0 / (2 * math.pi), decay_steps=5000
    ),
    "advection": dict(
        steps=200_000, collocation=4096, sigma=1.0 / (2 * math.pi), decay_steps=2000
    ),
    "burgers": dict(steps=200_000, collocation=8192, decay_steps=2000),
}
for _settings in PAPER.values():
    _settings.update(_PAPER_COMMON)


def parse_args(argv=None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    pde = parser.add_argument_group("PDE")
    pde.add_argument("--pde", default="poisson", choices=sorted(PDES))
    pde.add_argument("--c", type=float, default=80.0, help="advection speed")
    pde.add_argument("--nu", type=float, default=0.01 / math.pi, help="Burgers")
    pde.add_argument("--a1", type=float, default=None, help="Poisson/Helmholtz")
    pde.add_argument("--a2", type=float, default=None, help="Poisson/Helmholtz")
    pde.add_argument("--k", type=float, default=1.0, help="Helmholtz wavenumber")
    pinn = parser.add_argument_group("PINN")
    pinn.add_argument(
        "--collocation", type=int, default=None, help="collocation points per step"
    )
    pinn.add_argument(
        "--weighting", default="grad_norm", choices=["grad_norm", "fixed"]
    )
    pinn.add_argument(
        "--weights-every", type=int, default=None, help="grad-norm refresh period"
    )
    pinn.add_argument("--weights-momentum", type=float, default=0.9)
    pinn.add_argument(
        "--causal-eps", type=float, default=None, help="causal epsilon (>= 0)"
    )
    pinn.add_argument("--chunks", type=int, default=32, help="causal time chunks")
    pinn.add_argument(
        "--no-causal", action="store_true", help="no causal weighting in time"
    )
    pinn.add_argument(
        "--hard-initial",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="impose the initial condition exactly (u = u0 + t N) instead of an "
        "`ic` loss term (time-dependent PDEs)",
    )
    pinn.add_argument(
        "--periodic",
        default="embedding",
        choices=["embedding", "loss"],
        help="periodic PDEs: exact periodic embedding or a soft periodic loss",
    )
    pinn.add_argument("--decay-rate", type=float, default=0.9, help="lr decay")
    pinn.add_argument("--decay-steps", type=int, default=None, help="lr decay")
    pinn.add_argument("--warmup-steps", type=int, default=0)
    pinn.add_argument(
        "--lbfgs-steps", type=int, default=0, help="L-BFGS steps after Adam"
    )
    pinn.add_argument("--float64", action="store_true", help="jax_enable_x64")
    pinn.add_argument("--resolution", type=int, default=None, help="reference grid")
    pinn.add_argument(
        "--paper",
        action="store_true",
        help="the published budget of the jaxpi guide (GPU; hours on CPU)",
    )
    add_field_arguments(
        parser, activation="tanh", features=128, sigma=None, width=None, depth=None
    )
    add_training_arguments(parser, steps=None, lr=1e-3, steps_per_call=100)
    args = parser.parse_args(argv)
    settings = dict(DEFAULTS[args.pde])
    if args.paper:
        settings.update(PAPER[args.pde])
    for name, value in settings.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.sigma is None:
        args.sigma = DEFAULTS[args.pde]["sigma"]
    for name in (
        "steps", "collocation", "chunks", "weights_every", "decay_steps", "width",
        "depth",
    ):  # fmt: skip
        if getattr(args, name) <= 0:
            parser.error(f"argument --{name.replace('_', '-')}: must be > 0")
    if args.causal_eps < 0 or not math.isfinite(args.causal_eps):
        parser.error("argument --causal-eps: must be a finite number >= 0")
    if args.lbfgs_steps < 0:
        parser.error("argument --lbfgs-steps: must be >= 0")
    if args.pde in ("poisson", "helmholtz"):
        if args.hard_initial:
            parser.error(
                f"argument --hard-initial: {args.pde} has no initial condition"
            )
    return args


def build_problem(args: argparse.Namespace):
    weighting = (
        GradNorm(args.weights_every, args.weights_momentum)
        if args.weighting == "grad_norm"
        else FixedWeights()
    )
    common = dict(n_collocation=args.collocation, weighting=weighting)
    causal = None if args.no_causal else Causal(args.causal_eps, args.chunks)
    periodic_loss = args.periodic == "loss" or args.model == "siren"
    if args.pde in ("poisson", "helmholtz"):
        a1 = 1.0 if args.a1 is None else args.a1
        a2 = (1.0 if args.pde == "poisson" else 4.0) if args.a2 is None else args.a2
        extra = {} if args.resolution is None else {"resolution": args.resolution}
        if args.pde == "poisson":
            return PDES["poisson"](a1, a2, **common, **extra)
        return PDES["helmholtz"](a1, a2, args.k, **common, **extra)
    extra = {} if args.resolution is None else {"resolution": (101, args.resolution)}
    common["hard_initial"] = args.hard_initial
    if args.pde == "burgers":
        return PDES["burgers"](args.nu, causal=causal, **common, **extra)
    if args.pde == "advection":
        return PDES["advection"](
            args.c, causal=causal, periodic_loss=periodic_loss, **common, **extra
        )
    return PDES["allen_cahn"](
        causal=causal, periodic_loss=periodic_loss, **common, **extra
    )


def build_pinn_field(args, problem, key):
    """The flags' field; on a periodic embedding for periodic PDEs. (Arrays take
    JAX's default float: float64 after `--float64`.)"""
    periodic = any(p is not None for p in problem.periods)
    if not periodic or args.periodic != "embedding" or args.model == "siren":
        return build_field(args, problem.in_size, problem.out_size, key)
    encoding_key, field_key = jr.split(key)
    embedding = PeriodicEmbedding(problem.in_size, problem.periods)
    encoding = None
    if args.encoding == "fourier":
        encoding = FourierFeatures(
            embedding.size, args.features, sigma=args.sigma, key=encoding_key
        )
    elif args.encoding == "positional":
        raise SystemExit(
            "--encoding positional is not available with a periodic embedding; use "
            "fourier, none, or --periodic loss"
        )
    embedding = PeriodicEmbedding(problem.in_size, problem.periods, encoding=encoding)
    return CoordinateMLP(
        problem.in_size,
        problem.out_size,
        args.width,
        args.depth,
        encoding=embedding,
        activation=args.activation,
        linear=args.linear,
        norm=None if args.norm == "none" else args.norm,
        rwf_mu=args.rwf_mu,
        rwf_sigma=args.rwf_sigma,
        key=field_key,
    )


def optimizer(args):
    schedule = optax.exponential_decay(
        args.lr, args.decay_steps, args.decay_rate, transition_begin=args.warmup_steps
    )
    if args.warmup_steps:
        warmup = optax.linear_schedule(0.0, args.lr, args.warmup_steps)
        schedule = optax.join_schedules([warmup, schedule], [args.warmup_steps])
    return optax.inject_hyperparams(optax.adam)(learning_rate=schedule)


def plot(path, results, problem, metrics) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The compilation that `fit` made for the run file is reused here.
    out = sciinr.predict(problem, results[-1].field)
    names = list(problem.coordinates())
    axes_values = [np.asarray(a) for a in problem.coordinates().values()]
    # Time (or y) on the horizontal axis, as in the papers' figures.
    extent = [
        axes_values[0][0], axes_values[0][-1], axes_values[1][0], axes_values[1][-1]
    ]  # fmt: skip
    fig, axes = plt.subplots(1, 5, figsize=(24, 4.4), layout="constrained")
    vmin, vmax = float(out["reference"].min()), float(out["reference"].max())
    for ax, key, title in [
        (axes[0], "prediction", f"prediction (rel. L2 {metrics['rel_l2']:.2e})"),
        (axes[1], "reference", "reference"),
    ]:
        im = ax.imshow(
            out[key].T, origin="lower", aspect="auto", extent=extent,
            cmap="RdBu_r", vmin=vmin, vmax=vmax,
        )  # fmt: skip
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    im = axes[2].imshow(
        np.abs(out["error"]).T, origin="lower", aspect="auto", extent=extent,
        cmap="magma",
    )  # fmt: skip
    axes[2].set_title("|error|")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes[:3]:
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    offset = 0
    for stage, result in enumerate(results):
        history = result.history
        steps = history["step"] + offset
        for term in problem.term_names:
            axes[3].semilogy(
                steps, history[term], label=term if stage == 0 else None,
                color=f"C{problem.term_names.index(term)}",
            )  # fmt: skip
            axes[4].semilogy(
                steps, history[f"weight_{term}"], label=term if stage == 0 else None,
                color=f"C{problem.term_names.index(term)}",
            )  # fmt: skip
        if "causal_weight" in history:
            axes[4].semilogy(
                steps, history["causal_weight"], "k:",
                label="causal (last chunk)" if stage == 0 else None,
            )  # fmt: skip
        if "rel_l2" in history:
            mask = np.isfinite(history["rel_l2"])
            axes[3].semilogy(
                steps[mask], history["rel_l2"][mask], "ko-", ms=3,
                label="rel. L2" if stage == 0 else None,
            )  # fmt: skip
        if stage:
            axes[3].axvline(offset, color="gray", lw=0.8)
        offset = int(steps[-1])
    axes[3].set_title("loss terms")
    axes[4].set_title("weights")
    # Causal weights of late chunks start near 0 (1e-39 and below): clip the axis.
    axes[4].set_ylim(bottom=max(axes[4].get_ylim()[0], 1e-8))
    for ax in axes[3:]:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    field_key, fit_key, lbfgs_key = jr.split(jr.key(args.seed), 3)
    problem = build_problem(args)
    field = build_pinn_field(args, problem, field_key)
    if main_process():
        paper = " (--paper: the published budget; hours on a CPU)" if args.paper else ""
        print(
            f"{type(problem).__name__}: terms {list(problem.term_names)}, "
            f"{args.collocation} collocation points, "
            f"{sciinr.nn.num_parameters(field):,} parameters{paper}",
            file=sys.stderr,
        )
    stages = args.lbfgs_steps > 0
    config = vars(args)
    steps_per_call = min(args.steps_per_call, args.steps)
    adam = sciinr.fit(
        problem,
        field,
        optimizer(args),
        steps=args.steps,
        key=fit_key,
        steps_per_call=steps_per_call,
        eval_every=eval_every(args),
        output=None if stages else args.out,
        mesh=mesh(args),
        progress=not args.no_progress,
        config=config,
    )
    results = [adam]
    if stages:
        # L-BFGS needs one deterministic objective: fixed points, the balanced
        # weights of the Adam stage, no causal weighting.
        fixed = problem.full_batch(lbfgs_key, adam.problem_state["weight"])
        lbfgs_per_call = min(args.steps_per_call, args.lbfgs_steps)
        lbfgs = sciinr.fit(
            fixed,
            adam.field,
            optax.lbfgs(),
            steps=args.lbfgs_steps,
            key=lbfgs_key,
            steps_per_call=lbfgs_per_call,
            eval_every=lbfgs_per_call if args.plot else None,
            output=args.out,
            mesh=mesh(args),
            progress=not args.no_progress,
            config={**config, "adam_metrics": adam.metrics},
        )
        results.append(lbfgs)
        problem = fixed
    metrics = results[-1].metrics
    if args.plot and main_process():
        plot(args.plot, results, problem, metrics)
    print_metrics(metrics)
    if main_process():
        print(f"rel. L2 error {metrics['rel_l2']:.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

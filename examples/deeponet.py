"""Learn a solution operator with a DeepONet, data-driven or physics-informed.

The operators (`--operator`): the antiderivative s' = u, the nonlinear ODE
s' = -s^2 + u, the forced pendulum s1' = s2, s2' = -k sin s1 + u (both outputs),
and diffusion-reaction s_t = 0.01 s_xx + 0.01 s^2 + u(x) on [0, 1]^2. Input
functions u are Gaussian random fields (RBF kernel, length scale 0.2) at 100
sensors; the targets are generated with Diffrax and cached (per-user cache folder;
`--cache none` turns it off). The branch and the trunk are the example CLI's
fields (`--linear rwf|dense`, `--norm`, `--encoding` for the trunk, ...).

CPU defaults (data-driven antiderivative: 10,000 functions, RWF branch and trunk
1 x 100 ReLU with 100 basis functions, 20,000 Adam steps of 100 functions x 100
points, learning rate 1e-3 x 0.9 every 500 steps): test rel. L2 5.7e-3 (RWF) and
8.7e-3 (dense), mean of 2 seeds, in 2 to 3 minutes on 2 shared CPU cores (load
average 15-20; data generation included).

    python examples/deeponet.py --out run.h5 --plot fig.png
    python examples/deeponet.py --operator diffusion_reaction --physics
    python examples/deeponet.py --operator pendulum --linear dense
    python examples/deeponet.py --operator antiderivative --physics --paper

`--paper` runs the protocol of the physics-informed DeepONet paper (Wang, Wang &
Perdikaris 2021): 10,000 functions and 40,000 steps for the ODE operators, 5,000
functions and 120,000 steps for diffusion-reaction, its networks and learning-rate
schedule (untimed on CPU: hours). Prints the final metrics as one JSON line.
"""

import argparse
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
from problems.operator import make_problem, OPERATORS


# Per operator and mode: (n_train, steps, decay steps, activation, depth, width,
# basis). The ODE data-driven networks are the paper's DeepONet for the
# antiderivative ([m, 100, 100], ReLU); the physics-informed and diffusion-reaction
# ones its 5 x 50 tanh networks.
_DATA_ODE = dict(activation="relu", depth=1, width=100, basis=100)
_TANH = dict(activation="tanh", depth=4, width=50, basis=50)
CPU = {
    ("ode", False): dict(n_train=10_000, steps=20_000, decay=500, **_DATA_ODE),
    ("ode", True): dict(n_train=10_000, steps=20_000, decay=500, **_TANH),
    ("pde", False): dict(n_train=5_000, steps=10_000, decay=250, **_TANH),
    ("pde", True): dict(n_train=5_000, steps=10_000, decay=250, **_TANH),
}
PAPER = {
    ("ode", False): dict(n_train=10_000, steps=40_000, decay=1000, **_DATA_ODE),
    ("ode", True): dict(n_train=10_000, steps=40_000, decay=1000, **_TANH),
    ("pde", False): dict(n_train=5_000, steps=120_000, decay=2000, **_TANH),
    ("pde", True): dict(n_train=5_000, steps=120_000, decay=2000, **_TANH),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    data = parser.add_argument_group("operator")
    data.add_argument("--operator", default="antiderivative", choices=list(OPERATORS))
    data.add_argument(
        "--physics",
        action="store_true",
        help="physics-informed: residual + initial/boundary values, no target data",
    )
    data.add_argument(
        "--paper", action="store_true", help="the paper's protocol (untimed on CPU)"
    )
    data.add_argument("--n-train", type=int, default=None, help="training functions")
    data.add_argument("--n-test", type=int, default=None, help="test functions")
    data.add_argument("--n-sensors", type=int, default=100)
    data.add_argument("--length-scale", type=float, default=0.2)
    data.add_argument("--batch-size", type=int, default=100, help="functions per step")
    data.add_argument(
        "--n-collocation", type=int, default=100, help="physics-informed points"
    )
    data.add_argument(
        "--cache",
        default="user",
        help="dataset cache folder; 'user' for the per-user folder, 'none' for off",
    )
    add_field_arguments(
        parser, encoding="none", activation=None, width=None, depth=None
    )
    parser.add_argument_group("DeepONet").add_argument(
        "--basis", type=int, default=None, help="basis functions p per output"
    )
    add_training_arguments(parser, steps=None, steps_per_call=1000)
    parser.add_argument(
        "--decay",
        type=int,
        default=None,
        help="multiply the learning rate by 0.9 every this many steps",
    )
    args = parser.parse_args(argv)
    kind = "pde" if args.operator == "diffusion_reaction" else "ode"
    defaults = (PAPER if args.paper else CPU)[kind, args.physics]
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.n_test is None:
        args.n_test = 100 if kind == "pde" else 1_000
    return args


def build_onet(args: argparse.Namespace, problem, key):
    """Branch (no encoding) and trunk (`--encoding`) from the example flags."""
    branch_key, trunk_key = jr.split(key)
    width = args.basis * problem.out_size
    branch_args = argparse.Namespace(**{**vars(args), "encoding": "none"})
    branch = build_field(branch_args, problem.n_sensors, width, branch_key)
    trunk = build_field(args, problem.in_size, width, trunk_key)
    return sciinr.nn.DeepONet(branch, trunk, out_size=problem.out_size)


def plot(path: str, result, problem) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The compilation `fit` made for the run file is reused here.
    out = {k: np.asarray(v) for k, v in sciinr.predict(problem, result.field).items()}
    coords = {k: np.asarray(v) for k, v in problem.coordinates().items()}
    sensors = np.asarray(problem.data.sensors)
    errors = out["errors"]
    shown = np.argsort(errors)[[0, len(errors) // 2, -1]]  # best, median, worst
    colors = ["C0", "C1", "C3"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), layout="constrained")
    for i, c, which in zip(shown, colors, ["best", "median", "worst"]):
        label = f"test function {i} ({which}, error {errors[i]:.1e})"
        axes[0].plot(sensors, out["inputs"][i], color=c, label=label)
    axes[0].set_title("inputs u at the sensors")
    axes[0].set_xlabel("x")
    axes[0].legend(fontsize=8)
    if "t" in coords:  # diffusion-reaction: s(x, t = 1)
        for i, c in zip(shown, colors):
            axes[1].plot(coords["x"], out["targets"][i, :, -1, 0], color=c)
            axes[1].plot(coords["x"], out["predictions"][i, :, -1, 0], "k--", lw=1)
        axes[1].set_title("s(x, t=1): reference (colour), DeepONet (dashed)")
        axes[1].set_xlabel("x")
    else:
        for channel, style in zip(range(problem.out_size), ["-", ":"]):
            for i, c in zip(shown, colors):
                axes[1].plot(coords["x"], out["targets"][i, :, channel], style, color=c)
                axes[1].plot(
                    coords["x"], out["predictions"][i, :, channel], "k--", lw=1
                )
        title = "s: reference (colour), DeepONet (dashed)"
        if problem.out_size == 2:
            title += "; s1 solid, s2 dotted"
        axes[1].set_title(title)
        axes[1].set_xlabel("x")
    bins = np.logspace(np.log10(errors.min()), np.log10(errors.max()) + 1e-9, 30)
    axes[2].hist(errors, bins=bins, color="0.5")
    axes[2].set_xscale("log")
    axes[2].axvline(errors.mean(), color="k", ls="--", label="mean")
    axes[2].set_title(f"relative L2 error over {len(errors)} test functions")
    axes[2].legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    problem_key, field_key, fit_key = jr.split(jr.key(args.seed), 3)
    cache = {"user": True, "none": None}.get(args.cache, args.cache)
    problem = make_problem(
        args.operator,
        length_scale=args.length_scale,
        n_sensors=args.n_sensors,
        n_train=args.n_train,
        n_test=args.n_test,
        physics=args.physics,
        batch_size=args.batch_size,
        n_collocation=args.n_collocation,
        cache=cache,
        key=problem_key,
    )
    onet = build_onet(args, problem, field_key)
    mode = "physics-informed" if args.physics else "data-driven"
    print(
        f"{args.operator} ({mode}): {args.n_train} training functions, "
        f"{sciinr.nn.num_parameters(onet):,} parameters, dropped blow-ups "
        f"(train, test) = {problem.dropped}",
        file=sys.stderr,
    )
    schedule = optax.exponential_decay(args.lr, args.decay, 0.9)
    result = sciinr.fit(
        problem,
        onet,
        optax.adam(schedule),
        steps=args.steps,
        key=fit_key,
        steps_per_call=min(args.steps_per_call, args.steps),
        eval_every=eval_every(args),
        output=args.out,
        progress=not args.no_progress,
        config=vars(args),
        mesh=mesh(args),
    )
    if args.plot and main_process():
        plot(args.plot, result, problem)
    print_metrics(result.metrics)
    if main_process():
        print(
            f"test rel. L2 {result.metrics['rel_l2']:.3e} "
            f"(std {result.metrics['rel_l2_std']:.3e})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

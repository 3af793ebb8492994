"""DeepONet benchmarks: dataset generation and training throughput against DeepXDE.

1. **Data**: 10,000 antiderivative samples (Gaussian random field with l = 0.2 on a
   991-point grid, Diffrax Tsit5 with one step per grid interval, all functions in
   one batched solve, targets at 100 points), cold (first call: eigendecomposition
   and compilation included) and warm; against a SciPy loop (`odeint` per function
   on the same piecewise-linear input), whose functions/s are measured on a subset.
2. **Training, aligned data-driven antiderivative**, the sizes of DeepXDE's
   `antiderivative_aligned` example: 150 functions x 100 points, full batch, branch
   [100, 40, 40] and trunk [1, 40, 40] ReLU, Adam 1e-3. Ours: `sciinr.fit` on
   `problems.operator.Antiderivative` with `batch_size=None` (every step all 150
   functions at their 100 points, aligned layout).
3. **Training, physics-informed antiderivative**, the sizes of DeepXDE's
   `antiderivative_aligned_pideeponet` example: 1,000 functions at 50 sensors, 100
   per step, 20 + 2 residual points, branch [50, 128, 128, 128] and trunk
   [1, 128, 128, 128] tanh, Adam 5e-4. Ours: 22 collocation points per step plus the
   initial value (DeepXDE enforces s(0) = 0 by an output transform instead).

Steps/s are the median over chunks of 1,000 (aligned) or 200 (physics-informed)
steps after the first chunk (which compiles). DeepXDE (PyTorch backend, CPU) runs in
a subprocess when `--deepxde-python` names an interpreter that has `deepxde` and
`torch` (they are never a dependency of sciinr), alternating with ours so that drift
of the shared machine hits both. Both are pinned to one core (`taskset`), JAX with
single-threaded XLA flags and PyTorch with `torch.set_num_threads(1)`.

    taskset -c 0 python benchmarks/deeponet.py
    taskset -c 0 python benchmarks/deeponet.py --deepxde-python /tmp/venv/bin/python
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time


_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _deepxde_worker(kind: str, iterations: int) -> None:
    """Time DeepXDE (PyTorch) training; print one JSON line. No JAX imported."""
    os.environ["DDE_BACKEND"] = "pytorch"
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import deepxde as dde

    rng = np.random.default_rng(0)
    if kind == "aligned":
        m, points, functions = 100, 100, 150
        xs = np.linspace(0, 1, points, dtype=np.float32)[:, None]
        u = rng.normal(size=(functions, m)).astype(np.float32)
        s = rng.normal(size=(functions, points)).astype(np.float32)
        data = dde.data.TripleCartesianProd(
            X_train=(u, xs), y_train=s, X_test=(u[:10], xs), y_test=s[:10]
        )
        net = dde.nn.DeepONetCartesianProd(
            [m, 40, 40], [1, 40, 40], "relu", "Glorot normal"
        )
        lr, warmup = 1e-3, 100
    else:
        from deepxde.backend import transpose

        geom = dde.geometry.TimeDomain(0, 1)

        def pde(x, u, v):
            return dde.grad.jacobian(u, x) - v

        ic = dde.icbc.IC(geom, lambda _: 0, lambda _, on_initial: on_initial)
        pde_data = dde.data.PDE(
            geom, pde, ic, num_domain=20, num_boundary=2, num_test=40
        )
        data = dde.data.PDEOperatorCartesianProd(
            pde_data,
            dde.data.GRF(length_scale=0.2),
            np.linspace(0, 1, num=50)[:, None],
            1000,
            num_test=10,
            batch_size=100,
        )
        net = dde.nn.DeepONetCartesianProd(
            [50, 128, 128, 128], [1, 128, 128, 128], "tanh", "Glorot normal"
        )
        net.apply_output_transform(
            lambda inputs, outputs: outputs * transpose(inputs[1], [1, 0])
        )
        lr, warmup = 5e-4, 5
    model = dde.Model(data, net)
    model.compile("adam", lr=lr)
    never = 10**9
    model.train(iterations=warmup, display_every=never, verbose=0)
    start = time.perf_counter()
    model.train(iterations=iterations, display_every=never, verbose=0)
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "steps_per_s": iterations / elapsed,
                "torch": torch.__version__,
                "deepxde": dde.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


def _deepxde(python: str, kind: str, iterations: int) -> dict | None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [python, os.path.abspath(__file__), "--deepxde-worker", kind,
         "--iterations", str(iterations)],
        capture_output=True, text=True, env=env, timeout=3600,
    )  # fmt: skip
    if proc.returncode != 0:
        print(f"# DeepXDE ({kind}) failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deepxde-python", default=None)
    parser.add_argument("--repeats", type=int, default=2, help="alternations")
    parser.add_argument("--threads", choices=["1", "all"], default="1")
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip-data", action="store_true")
    parser.add_argument("--deepxde-worker", choices=["aligned", "pi"], default=None)
    parser.add_argument("--iterations", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.deepxde_worker:
        _deepxde_worker(args.deepxde_worker, args.iterations)
        return 0
    if args.threads == "1":  # before JAX is imported
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " " + _SINGLE_THREAD
        ).strip()

    import diffrax
    import jax
    import jax.random as jr
    import numpy as np
    import optax
    from scipy.integrate import odeint

    import sciinr
    from problems.operator import _grf, _solvers, Antiderivative, gaussian_random_field

    info = {
        "processor": _cpu_model(),
        "platform": platform.platform(),
        "affinity": len(os.sched_getaffinity(0)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
        "diffrax": diffrax.__version__,
        "loadavg_before": os.getloadavg(),
    }
    print(
        f"# {info['processor']}, {info['affinity']} core(s) available, jax "
        f"{info['jax']}, diffrax {info['diffrax']}, XLA_FLAGS={info['xla_flags']!r}, "
        f"load {info['loadavg_before'][0]:.2f}"
    )
    results: dict = {"machine": info}

    # ---------------------------------------------------------------- data
    if not args.skip_data:
        points = np.linspace(0.0, 1.0, 100)

        def generate(seed):
            inputs = gaussian_random_field(jr.key(seed), 10_000, 991, length_scale=0.2)
            targets, ok = _solvers.antiderivative(inputs, points)
            return jax.block_until_ready((inputs, targets, ok))

        _grf._factor.cache_clear()
        start = time.perf_counter()
        generate(0)
        cold = time.perf_counter() - start
        warm = []
        for seed in range(1, 4):
            start = time.perf_counter()
            generate(seed)
            warm.append(time.perf_counter() - start)
        inputs = np.asarray(
            gaussian_random_field(jr.key(9), 200, 991, length_scale=0.2), np.float64
        )
        grid = np.linspace(0.0, 1.0, 991)
        start = time.perf_counter()
        for u in inputs:
            odeint(lambda s, x, u=u: np.interp(x, grid, u), 0.0, points)
        scipy_rate = len(inputs) / (time.perf_counter() - start)
        results["data"] = {
            "cold_s": cold,
            "warm_s": float(np.median(warm)),
            "functions_per_s_warm": 10_000 / float(np.median(warm)),
            "scipy_functions_per_s": scipy_rate,
        }
        print(
            f"data: 10,000 antiderivatives in {cold:.2f} s cold (compile + "
            f"factorization), {np.median(warm):.3f} s warm "
            f"({10_000 / np.median(warm):,.0f} functions/s); SciPy odeint loop "
            f"{scipy_rate:,.0f} functions/s",
            flush=True,
        )

    # ---------------------------------------------------------------- training
    def ours(kind: str, linear: str) -> float:
        key = jr.key(0)
        if kind == "aligned":
            problem = Antiderivative(
                n_sensors=100, n_train=150, n_test=10, batch_size=None, cache=None,
                key=key,
            )  # fmt: skip
            sizes, activation, depth, lr, chunk = (
                (100, 40, 40, 1),
                "relu",
                1,
                1e-3,
                1000,
            )
        else:
            problem = Antiderivative(
                n_sensors=50, n_train=1000, n_test=10, physics=True, batch_size=100,
                n_collocation=22, cache=None, key=key,
            )  # fmt: skip
            sizes, activation, depth, lr, chunk = (
                (50, 128, 128, 2),
                "tanh",
                2,
                5e-4,
                200,
            )
        m, p, width, depth = sizes
        branch_key, trunk_key = jr.split(jr.key(1))
        onet = sciinr.nn.DeepONet(
            sciinr.nn.CoordinateMLP(
                m, p, width, depth, activation=activation, linear=linear,
                key=branch_key,
            ),
            sciinr.nn.CoordinateMLP(
                1, p, width, depth, activation=activation, linear=linear,
                key=trunk_key,
            ),
        )  # fmt: skip
        result = sciinr.fit(
            problem, onet, optax.adam(lr), steps=4 * chunk, key=jr.key(2),
            steps_per_call=chunk, progress=False,
        )  # fmt: skip
        rates = result.history["steps_per_s"]
        per_chunk = rates[chunk - 1 :: chunk][1:]  # after the compiling chunk
        return float(np.median(per_chunk))

    table = []
    for kind, iterations in (("aligned", 2000), ("pi", 50)):
        row: dict = {"kind": kind, "dense": [], "rwf": [], "deepxde": []}
        for _ in range(args.repeats):
            row["dense"].append(ours(kind, "dense"))
            row["rwf"].append(ours(kind, "rwf"))
            if args.deepxde_python:
                found = _deepxde(args.deepxde_python, kind, iterations)
                if found is not None:
                    row["deepxde"].append(found["steps_per_s"])
                    row["deepxde_versions"] = {
                        k: found[k] for k in ("torch", "deepxde", "threads")
                    }
        table.append(row)
        dense = np.median(row["dense"])
        line = (
            f"{kind}: sciinr dense {dense:,.0f} steps/s "
            f"(runs {', '.join(f'{r:,.0f}' for r in row['dense'])}), RWF "
            f"{np.median(row['rwf']):,.0f} steps/s"
        )
        if row["deepxde"]:
            theirs = np.median(row["deepxde"])
            line += (
                f"; DeepXDE {theirs:,.1f} steps/s (runs "
                f"{', '.join(f'{r:,.1f}' for r in row['deepxde'])}): "
                f"{dense / theirs:.1f}x"
            )
        print(line, flush=True)
    results["training"] = table
    info["loadavg_after"] = os.getloadavg()
    print(f"# load after {info['loadavg_after'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=float)
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    raise SystemExit(main())

"""Multi-process scaling on one machine: steps/s for 1, 2 and 4 processes.

`sciinr.fit` on a mesh over the devices of several processes (`jax.distributed`,
started here with `sciinr.distributed.launch`: loopback, CPU, Gloo collectives), for
the model of `benchmarks/trainer.py` (256 Gaussian Fourier features, sigma 10, a
4 x 256 dense ReLU MLP: 328,961 parameters) on the `camera` image at 128^2 (the
"fit" protocol), with random mini-batches:

- **strong scaling**: a fixed global batch (`--batch`, 4096 pixels) split over the
  processes;
- **weak scaling**: a fixed batch per process (`--batch-per-process`, 2048 pixels),
  so the global batch grows with the processes.

Each process runs XLA with one thread (`--threads`), so that P processes use P cores;
the first row also gives one process with XLA's default threading (all cores).

Reported per configuration, for a run of `--steps` steps after a run that compiled
everything:

- steps/s (the median over the chunks) and points/s (steps/s x global batch), and
  the points/s relative to one single-threaded process;
- the CPU time of every process (all threads) summed, per training point, and the
  CPU efficiency: that of one single-threaded process divided by it (100 %: splitting
  the batch costs nothing; below: communication, waiting and duplicated work). On a
  shared machine the wall clock mostly measures what the other jobs leave; the CPU
  time does not depend on them as much;
- the time of one all-reduce of a parameter-sized float32 vector over the same
  processes (what data parallelism adds to a step: the gradient's sum over the
  devices; the compiled step has exactly one, fused, all-reduce), and its share of
  the step time.

    python benchmarks/scaling.py                     # 1, 2, 4 processes
    python benchmarks/scaling.py --processes 1 2 --steps 60 --json out.json

Every figure depends on what else runs on the machine: the load average is printed
before and after each configuration.
"""

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# --------------------------------------------------------------------------------------
# One process of a configuration (started by `sciinr.distributed.launch`)
# --------------------------------------------------------------------------------------


def worker(args) -> None:
    import sciinr.distributed

    sciinr.distributed.initialize()

    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np
    import optax
    from jax.experimental import multihost_utils
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    import sciinr
    from problems.image import ImageRegression
    from sciinr.nn import CoordinateMLP, FourierFeatures, num_parameters

    processes, devices = jax.process_count(), jax.device_count()
    batch = args.batch if args.mode == "strong" else args.batch_per_process * devices
    problem = ImageRegression(
        "camera", size=args.size, protocol="fit", batch_size=batch
    )
    encoding_key, field_key, fit_key = jr.split(jr.key(0), 3)
    encoding = FourierFeatures(2, 256, sigma=10.0, key=encoding_key)
    field = CoordinateMLP(2, 1, 256, 4, encoding=encoding, key=field_key)
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(AxisType.Auto,))
    optimizer = optax.adam(1e-3)  # one object: the timed run reuses the compilation
    kwargs = dict(key=fit_key, steps_per_call=args.steps_per_call, mesh=mesh)
    sciinr.fit(problem, field, optimizer, steps=args.steps_per_call, progress=False,
               **kwargs)  # fmt: skip  # compiles
    multihost_utils.sync_global_devices("timed run")
    wall, cpu = time.perf_counter(), time.process_time()
    result = sciinr.fit(problem, field, optimizer, steps=args.steps, progress=False,
                        **kwargs)  # fmt: skip
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # CPU seconds of every process (all of its threads), summed: what the run costs
    # whatever else the machine runs, unlike the wall clock on a shared machine.
    cpu_total = float(multihost_utils.process_allgather(np.array([cpu])).sum())
    chunk_ends = result.history["step"] % args.steps_per_call == 0
    steps_per_s = float(np.median(result.history["steps_per_s"][chunk_ends]))

    # One all-reduce of a parameter-sized vector over the same devices.
    n = num_parameters(field)
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    x = jax.make_array_from_callback(
        (devices, n), sharded, lambda index: np.ones((1, n), np.float32)
    )
    reduce = jax.jit(
        lambda x: jnp.sum(x, axis=0), out_shardings=NamedSharding(mesh, PartitionSpec())
    )
    reduce(x).block_until_ready()
    times = []
    for _ in range(args.reduce_repeats):
        t = time.perf_counter()
        reduce(x).block_until_ready()
        times.append(time.perf_counter() - t)
    allreduce = float(np.median(times)) if devices > 1 else 0.0

    if jax.process_index() == 0:
        step = 1.0 / steps_per_s
        print(
            "RESULT",
            json.dumps(
                {
                    "mode": args.mode,
                    "processes": processes,
                    "devices": devices,
                    "global_batch": batch,
                    "batch_per_device": batch // devices,
                    "steps_per_s": steps_per_s,
                    "points_per_s": steps_per_s * batch,
                    "step_ms": 1e3 * step,
                    "allreduce_ms": 1e3 * allreduce,
                    "comm_share": allreduce / step,
                    "wall_s_per_step": wall / args.steps,
                    "cpu_s_per_step": cpu_total / args.steps,
                    "cpu_us_per_point": 1e6 * cpu_total / args.steps / batch,
                    "parameters": n,
                    "final_loss": float(result.history["loss"][-1]),
                }
            ),
            flush=True,
        )


# --------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import jax

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def run_config(args, mode, processes, devices_per_process, threads) -> dict:
    import sciinr.distributed

    flags = [
        "--worker",
        "--mode", mode,
        "--size", str(args.size),
        "--batch", str(args.batch),
        "--batch-per-process", str(args.batch_per_process),
        "--steps", str(args.steps),
        "--steps-per-call", str(args.steps_per_call),
        "--reduce-repeats", str(args.reduce_repeats),
    ]  # fmt: skip
    env = {"PYTHONPATH": ROOT}
    if threads == 1:
        env["XLA_FLAGS"] = (
            "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    stdout, stderr = io.StringIO(), io.StringIO()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    status = sciinr.distributed.launch(
        [sys.executable, os.path.abspath(__file__), *flags],
        processes,
        devices_per_process=devices_per_process,
        timeout=args.timeout,
        env=env,
        stdout=stdout,
        stderr=stderr,
    )
    if status != 0:
        raise RuntimeError(
            f"{mode} scaling with {processes} processes failed (status {status}):\n"
            + stderr.getvalue()[-3000:]
        )
    line = next(
        l for l in stdout.getvalue().splitlines() if l.startswith("[0] RESULT ")
    )
    result = json.loads(line[len("[0] RESULT ") :])
    result.update(
        threads_per_process=threads,
        wall_s=time.perf_counter() - t0,
        load_before=load_before,
        load_after=os.getloadavg(),
    )
    return result


def table(results) -> str:
    rows = [
        "| scaling | processes x devices | threads/process | global batch | "
        "steps/s | points/s | vs 1 process | CPU µs/point | CPU efficiency | "
        "all-reduce (ms) | comm. share | load before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {
        r["mode"]: r
        for r in results
        if r["processes"] == 1 and r["devices"] == 1 and r["threads_per_process"] == 1
    }
    for r in results:
        ref = base.get(r["mode"])
        speedup = f"{r['points_per_s'] / ref['points_per_s']:.2f}x" if ref else "-"
        efficiency = (
            f"{100 * ref['cpu_us_per_point'] / r['cpu_us_per_point']:.0f} %"
            if ref
            else "-"
        )
        share = f"{100 * r['comm_share']:.0f} %" if r["devices"] > 1 else "-"
        reduce = f"{r['allreduce_ms']:.2f}" if r["devices"] > 1 else "-"
        threads = "all" if r["threads_per_process"] == 0 else r["threads_per_process"]
        per = r["devices"] // r["processes"]
        rows.append(
            f"| {r['mode']} | {r['processes']} x {per} | {threads} | "
            f"{r['global_batch']} | {r['steps_per_s']:.2f} | "
            f"{r['points_per_s']:,.0f} | {speedup} | {r['cpu_us_per_point']:.1f} | "
            f"{efficiency} | {reduce} | {share} | "
            f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--modes", nargs="+", default=["strong", "weak"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4096, help="strong: global")
    parser.add_argument("--batch-per-process", type=int, default=2048, help="weak")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--steps-per-call", type=int, default=10)
    parser.add_argument("--reduce-repeats", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="strong", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    info = machine()
    info["loadavg_before"] = os.getloadavg()
    print(json.dumps(info), flush=True)
    results = []
    for mode in args.modes:
        configs = [(1, 1, 0)] + [(p, 1, 1) for p in args.processes]
        if mode == "strong":
            configs.append((1, 2, 1))  # one process, two CPU devices
        for processes, devices, threads in configs:
            result = run_config(args, mode, processes, devices, threads)
            results.append(result)
            print(json.dumps(result), flush=True)
    info["loadavg_after"] = os.getloadavg()
    print()
    print(table(results))
    print(f"\nload average before {info['loadavg_before']}, after "
          f"{info['loadavg_after']}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"machine": info, "results": results}, file, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

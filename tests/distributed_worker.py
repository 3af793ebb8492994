"""One process of the 2-process runs of `test_distributed.py`.

    python tests/distributed_worker.py kill OUT_DIR   # dies mid-run (SIGKILL)
    python tests/distributed_worker.py main OUT_DIR   # resumes it, then the rest

started by `sciinr.distributed.launch` (which sets the variables that
`sciinr.distributed.initialize()` reads). `setup()` and `run_kwargs()` are also
imported by the tests, which compute the single-process references in-process.
"""

import json
import os
import re
import signal
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jax.sharding import NamedSharding, PartitionSpec

import sciinr
import sciinr._trainer._checkpointer as checkpointer
import sciinr.distributed
from problems.image import ImageRegression
from sciinr._trainer import _compiled
from sciinr._trainer._multihost import replicate
from sciinr._trainer._settings import auto_mesh
from sciinr.nn import CoordinateMLP, FourierFeatures


STEPS = 100
KILL_AT = 60  # the killed run dies before writing the checkpoint of this step
# One optimizer object for every run of a process: `fit` compiles its step once per
# optimizer object, and these runs share one compilation.
ADAM = optax.adam(3e-3)


def setup():
    """The problem (a global batch of 48 of 64 pixels), the field and the key."""
    problem = ImageRegression("camera", size=16, protocol="tancik", batch_size=48)
    encoding_key, field_key, fit_key = jr.split(jr.key(7), 3)
    encoding = FourierFeatures(2, 8, sigma=3.0, key=encoding_key)
    field = CoordinateMLP(2, 1, 16, 2, encoding=encoding, linear="rwf", key=field_key)
    return problem, field, fit_key


def run_kwargs(out) -> dict:
    """The 100-step Adam run (with evaluation and checkpoints) of every mode."""
    return dict(
        steps=STEPS,
        steps_per_call=10,
        eval_every=50,
        progress=False,
        checkpoint=os.path.join(out, "ckpt.h5"),
        checkpoint_every=20,
    )


def with_nan(problem):
    """`problem` with a NaN pixel (which its own checks would reject): the loss is
    NaN from the first step whose batch draws it, on one process's half only."""
    values = problem.train_values.at[5].set(jnp.nan)
    return eqx.tree_at(lambda p: p.train_values, problem, values)


def _record_writes(out: str, writes: list) -> None:
    """Record every file this process creates, opens for writing or renames in
    `out`, independently of how sciinr writes (HDF5 files go through a temporary
    file and a rename)."""

    def audit(event, args):
        if event == "open" and isinstance(args[0], str) and args[0].startswith(out):
            mode, flags = args[1], args[2] if isinstance(args[2], int) else 0
            writing = isinstance(mode, str) and bool(set(mode) & set("wax+"))
            if writing or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                writes.append(args[0])
        if event == "os.rename" and str(args[1]).startswith(out):
            writes.append(str(args[1]))

    sys.addaudithook(audit)


def _main(problem, field, key, mesh, out) -> None:
    # Resume the run that `_kill` left in `out/kill`.
    sciinr.fit(
        problem,
        field,
        ADAM,
        key=key,
        mesh=mesh,
        resume=True,
        output=os.path.join(out, "kill", "resumed.h5"),
        **run_kwargs(os.path.join(out, "kill")),
    )
    out = os.path.join(out, "train")
    # One SGD step (its update is proportional to the gradient).
    sciinr.fit(
        problem,
        field,
        optax.sgd(0.1),
        steps=1,
        key=key,
        progress=False,
        output=os.path.join(out, "one.h5"),
        mesh=mesh,
    )
    # 100 Adam steps with evaluation, checkpoints and a run file.
    result = sciinr.fit(
        problem,
        field,
        ADAM,
        key=key,
        output=os.path.join(out, "run.h5"),
        mesh=mesh,
        **run_kwargs(out),
    )
    print("METRICS", json.dumps(result.metrics, sort_keys=True), flush=True)
    # The trained field is replicated over the processes: predicting with the mesh
    # (every process takes part) and on process 0 alone (to draw a figure) agree.
    everywhere = sciinr.predict(problem, result.field, mesh=mesh)["image"]
    if jax.process_index() == 0:
        alone = sciinr.predict(problem, result.field)["image"]
        print("PREDICT", everywhere.shape, float(abs(alone - everywhere).max()))
    no_files = {k: v for k, v in run_kwargs(out).items() if "checkpoint" not in k}

    # The sampler of a step as the trainer compiles it: each process holds only its
    # share of the batch, and draws only its share of the random numbers.
    auto = auto_mesh(mesh)
    sharding = NamedSharding(auto, PartitionSpec("data"))
    placed, placed_key = replicate((problem, key), auto)
    with jax.set_mesh(auto):
        sample = eqx.filter_jit(_compiled.sample)
        args = (placed, placed_key, jnp.asarray(3), sharding)
        coords, _ = sample(*args)
        text = sample.lower(*args).compile().compiled.as_text()
    sizes = {int(n) for n in re.findall(r"u32\[(\d+)\]", text)}
    shards = sorted({s.data.shape for s in coords.addressable_shards})
    print("SAMPLE", coords.shape, shards, max(sizes), flush=True)

    # A non-finite loss: every process stops with the same error.
    try:
        sciinr.fit(with_nan(problem), field, ADAM, key=key, mesh=mesh, **no_files)
    except sciinr.NonFiniteLossError as err:
        print("NONFINITE", err.step, err.term, str(err), flush=True)


def _kill(problem, field, key, mesh, out) -> None:
    save = checkpointer.save_checkpoint

    def save_or_die(path, state, *, step, **kwargs):
        if step == KILL_AT:  # both processes die here, mid-run
            os.kill(os.getpid(), signal.SIGKILL)
        return save(path, state, step=step, **kwargs)

    checkpointer.save_checkpoint = save_or_die
    out = os.path.join(out, "kill")
    sciinr.fit(problem, field, ADAM, key=key, mesh=mesh, **run_kwargs(out))


def main(mode: str, out: str) -> None:
    sciinr.distributed.initialize()  # before any JAX computation
    jax.config.update("jax_numpy_dtype_promotion", "strict")  # as in the tests
    writes: list[str] = []
    _record_writes(out, writes)
    problem, field, key = setup()
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    print("DEVICES", jax.process_count(), jax.device_count(), flush=True)
    {"main": _main, "kill": _kill}[mode](problem, field, key, mesh, out)
    print("WRITES", json.dumps(sorted(set(writes))), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

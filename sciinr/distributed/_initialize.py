"""Starting JAX's distributed runtime: from arguments, the launcher, or the cluster."""

import math
import os
import socket
import sys
import threading
from collections.abc import Sequence

import jax


COORDINATOR_ADDRESS = "SCIINR_COORDINATOR_ADDRESS"
NUM_PROCESSES = "SCIINR_NUM_PROCESSES"
PROCESS_ID = "SCIINR_PROCESS_ID"
"""The environment variables that `python -m sciinr.distributed` sets for each of the
processes it starts, and that `initialize()` reads."""

_EXIT_STATUS = 1
# JAX's own start-up timeout is set this much later than ours, so that ours, with its
# explanation, fires first (JAX's aborts the process from C++ with a stack trace).
_JAX_TIMEOUT_MARGIN = 15


def _int_from_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"The environment variable {name} must be an integer, got {value!r}."
        ) from None


def _check_address(address: str) -> tuple[str, int]:
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(
            "`coordinator_address` must be 'host:port' (the address of process 0 and "
            f"a free port on it, e.g. '10.0.0.1:12345'), got {address!r}."
        )
    host, port = address.rsplit(":", 1)
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(
            "`coordinator_address` must be 'host:port' with a port in 1 ... 65535, "
            f"got {address!r}."
        )
    return host.strip("[]"), int(port)


def _check_ids(num_processes: object, process_id: object) -> None:
    if num_processes is not None and (
        not isinstance(num_processes, int)
        or isinstance(num_processes, bool)
        or num_processes < 1
    ):
        raise ValueError(
            f"`num_processes` must be a positive integer, got {num_processes!r}."
        )
    if process_id is not None and (
        not isinstance(process_id, int) or isinstance(process_id, bool)
    ):
        raise ValueError(f"`process_id` must be an integer, got {process_id!r}.")
    if (
        isinstance(num_processes, int)
        and isinstance(process_id, int)
        and not 0 <= process_id < num_processes
    ):
        raise ValueError(
            f"`process_id` must be in 0 ... {num_processes - 1} (`num_processes` is "
            f"{num_processes}), got {process_id}."
        )


def _reachable(address: str) -> bool:
    host, port = _check_address(address)
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _explain_timeout(
    address: str | None, num_processes: int | None, process_id: int | None, timeout
) -> str:
    who = "This process"
    if process_id is not None and num_processes is not None:
        who = f"Process {process_id} of {num_processes}"
    where = f"the coordinator at {address}" if address else "the coordinator"
    if address is not None and process_id != 0 and not _reachable(address):
        cause = (
            f"nothing accepts connections at {address}: is process 0 running, with "
            "this address and port, and can this machine reach it?"
        )
    else:
        count = f"all {num_processes}" if num_processes else "all"
        cause = (
            f"{where} is up, but not {count} processes registered with it: fewer "
            "processes were started than `num_processes`, or they disagree on it, "
            "or one of them failed before connecting"
        )
    return (
        f"sciinr.distributed.initialize: {who} could not join the distributed run "
        f"within {timeout:g} s: {cause}. Every process must be given the same "
        "coordinator address and number of processes, and each process id 0 ... "
        "n - 1 exactly once.\n"
    )


def _watchdog(done: threading.Event, timeout: int | float, explain) -> None:
    if not done.wait(timeout):
        # JAX's runtime cannot be interrupted from Python while it connects (the
        # main thread is inside C++, and its own timeout aborts the process), so
        # explain and exit from here.
        sys.stderr.write(explain())
        sys.stderr.flush()
        os._exit(_EXIT_STATUS)


def _exit_on_uncaught_exceptions() -> None:
    """End the process right after an uncaught exception's traceback.

    Otherwise the interpreter's exit runs JAX's shutdown, which waits for every other
    process (up to 5 minutes), while those wait for this one in their next
    collective: the whole run would hang instead of failing.
    """
    previous = sys.excepthook

    def excepthook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS)

    sys.excepthook = excepthook


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    timeout: int | float = 300,
) -> None:
    """Join this process to a multi-process JAX run (`jax.distributed.initialize`).

    Call it at the start of the script, before any JAX computation, on every process.
    Afterwards `jax.devices()` lists the devices of all processes, and
    `sciinr.fit(..., mesh=jax.make_mesh((jax.device_count(),), ("data",)))` trains
    data-parallel over all of them (see the "Scaling out" guide).

    Where the settings come from, in this order:

    1. the arguments;
    2. the environment variables `SCIINR_COORDINATOR_ADDRESS`,
       `SCIINR_NUM_PROCESSES` and `SCIINR_PROCESS_ID`, which
       `python -m sciinr.distributed --processes N script.py ...` sets for each
       process it starts;
    3. JAX's detection of the cluster: SLURM (`srun`; `SLURM_NTASKS`,
       `SLURM_PROCID`, ...), Open MPI (`mpirun`; `OMPI_COMM_WORLD_SIZE`, ...), and
       `JAX_COORDINATOR_ADDRESS`. On GPUs, SLURM and Open MPI give each process one
       GPU (`SLURM_LOCALID`).

    Calling it again in an initialized process does nothing. On CPU, cross-process
    collectives use Gloo (`jax_cpu_collectives_implementation`, JAX's default since
    0.5; set here when it is off).

    **Arguments:**

    - `coordinator_address`: `"host:port"` of process 0, where it starts JAX's
      coordination service (any free port; the same on every process).
    - `num_processes`: the number of processes in the run.
    - `process_id`: this process's id, `0 ... num_processes - 1`.
    - `local_device_ids`: restrict this process to these of its local devices
      (e.g. one GPU per process). Keyword-only.
    - `timeout`: seconds to wait for every process to join. Keyword-only.

    **Raises:**

    - `ValueError` for malformed arguments or environment variables, or when
      nothing says how to start (no arguments, no launcher variables and no
      cluster detected).
    - `RuntimeError` (JAX's) if JAX has already computed something in this process.

    If the processes cannot all join within `timeout` (an unreachable coordinator,
    fewer processes started than `num_processes`, processes that disagree on it),
    the process writes what went wrong to stderr and exits with status 1: JAX's
    runtime cannot be interrupted from Python while it waits, and would otherwise
    abort with a C++ stack trace a little later.

    Once initialized, an exception that nothing catches ends the process right
    after its traceback (exit status 1), so that a launcher (`srun
    --kill-on-bad-exit`, `python -m sciinr.distributed`) stops the run at once.
    Without this, the interpreter's exit would wait up to 5 minutes for the other
    processes (JAX's shutdown barrier), while they wait for this one in their next
    collective.
    """
    if jax.distributed.is_initialized():
        return
    if coordinator_address is None:
        coordinator_address = os.environ.get(COORDINATOR_ADDRESS) or None
    if num_processes is None:
        num_processes = _int_from_env(NUM_PROCESSES)
    if process_id is None:
        process_id = _int_from_env(PROCESS_ID)
    if coordinator_address is not None:
        _check_address(coordinator_address)
    _check_ids(num_processes, process_id)
    if isinstance(timeout, bool) or not (
        isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0
    ):
        raise ValueError(f"`timeout` must be a positive number, got {timeout!r}.")
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")

    done = threading.Event()
    explain = lambda: _explain_timeout(
        coordinator_address, num_processes, process_id, timeout
    )
    watchdog = threading.Thread(
        target=_watchdog, args=(done, timeout, explain), daemon=True
    )
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            local_device_ids=local_device_ids,
            initialization_timeout=math.ceil(timeout) + _JAX_TIMEOUT_MARGIN,
        )
    except ValueError as err:
        if "defined" not in str(err):
            raise
        missing = [
            name
            for name, value in [
                ("`coordinator_address`", coordinator_address),
                ("`num_processes`", num_processes),
                ("`process_id`", process_id),
            ]
            if value is None
        ]
        raise ValueError(
            "Cannot tell how to start the distributed run: "
            f"{', '.join(missing)} {'was' if len(missing) == 1 else 'were'} not "
            f"given, not set by the launcher ({COORDINATOR_ADDRESS}, "
            f"{NUM_PROCESSES}, {PROCESS_ID}), and no SLURM or Open MPI environment "
            "was detected. Pass them, or start the processes with "
            "`python -m sciinr.distributed --processes N script.py ...` (one "
            "machine), `srun` (SLURM) or `mpirun` (Open MPI)."
        ) from None
    finally:
        done.set()
    _exit_on_uncaught_exceptions()

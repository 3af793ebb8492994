"""Starting N local processes of a script, for trying multi-process runs on one
machine (`python -m sciinr.distributed`)."""

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from ._initialize import COORDINATOR_ADDRESS, NUM_PROCESSES, PROCESS_ID


_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when stopping the processes


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that is free now (the system picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_count(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


def _forward(stream, out: io.TextIOBase, prefix: str, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            out.write(prefix + line)
            out.flush()
    stream.close()


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM every running process (and its children), SIGKILL after a grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        running = [p for p in procs if p.poll() is None]
        for p in running:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + _GRACE
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            time.sleep(0.05)


def _status(code: int) -> int:
    """A shell-style exit status: 128 + N for death by signal N."""
    return 128 - code if code < 0 else code


def launch(
    command: Sequence[str],
    processes: int,
    *,
    devices_per_process: int = 1,
    port: int | None = None,
    timeout: int | float | None = None,
    env: Mapping[str, str] | None = None,
    prefix: bool = True,
    stdout: io.TextIOBase | None = None,
    stderr: io.TextIOBase | None = None,
) -> int:
    """Run `processes` copies of `command` on this machine as one distributed run.

    Each copy gets the environment that [`sciinr.distributed.initialize`][] reads
    (`SCIINR_COORDINATOR_ADDRESS=127.0.0.1:<port>`, `SCIINR_NUM_PROCESSES`,
    `SCIINR_PROCESS_ID`), runs on the CPU (`JAX_PLATFORMS=cpu`, Gloo collectives)
    with `devices_per_process` CPU devices, and has its output lines prefixed with
    `[<process id>] `. When a process fails, the others are stopped (they would
    otherwise wait for it in their next collective); so are all of them after
    `timeout` seconds.

    This is for trying multi-process runs on one machine. On a cluster, start the
    processes with `srun` or `mpirun` instead.

    **Arguments:**

    - `command`: the command of one process, e.g. `[sys.executable, "train.py",
      "--distributed"]`.
    - `processes`: how many processes to start.
    - `devices_per_process`: CPU devices per process (`JAX_NUM_CPU_DEVICES`).
    - `port`: the coordinator's port on 127.0.0.1; a free one by default.
    - `timeout`: seconds after which every process is stopped; `None` waits.
    - `env`: extra environment variables for every process.
    - `prefix`: prefix each output line with the process id.
    - `stdout`, `stderr`: where the processes' output goes (`sys.stdout` and
      `sys.stderr` by default).

    **Returns:**

    `0` if every process succeeded; otherwise the exit status of the first that
    failed (`128 + N` for death by signal `N`), or `124` on timeout.
    """
    processes = _check_count("processes", processes)
    devices_per_process = _check_count("devices_per_process", devices_per_process)
    if isinstance(command, str) or not command:
        raise ValueError(
            "`command` must be a non-empty list of arguments, e.g. "
            f"[sys.executable, 'train.py'], got {command!r}."
        )
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    port = free_port() if port is None else _check_count("port", port)
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    threads: list[threading.Thread] = []
    try:
        for i in range(processes):
            process_env = {
                **os.environ,
                **(env or {}),
                COORDINATOR_ADDRESS: f"127.0.0.1:{port}",
                NUM_PROCESSES: str(processes),
                PROCESS_ID: str(i),
                "JAX_PLATFORMS": "cpu",
                "JAX_NUM_CPU_DEVICES": str(devices_per_process),
                "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
                "PYTHONUNBUFFERED": "1",
            }
            proc = subprocess.Popen(
                list(command),
                env=process_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # its own process group, stopped as one
            )
            procs.append(proc)
            tag = f"[{i}] " if prefix else ""
            for stream, out in ((proc.stdout, stdout), (proc.stderr, stderr)):
                thread = threading.Thread(
                    target=_forward, args=(stream, out, tag, lock), daemon=True
                )
                thread.start()
                threads.append(thread)
        deadline = None if timeout is None else time.monotonic() + timeout
        status = 0
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                status = _status(code)
                if any(c is None for c in codes):
                    with lock:
                        stderr.write(
                            f"sciinr.distributed: process {i} exited with status "
                            f"{status}; stopping the other processes.\n"
                        )
                break
            if all(c == 0 for c in codes):
                break
            if deadline is not None and time.monotonic() > deadline:
                with lock:
                    stderr.write(
                        f"sciinr.distributed: timeout after {timeout:g} s; stopping "
                        "every process.\n"
                    )
                status = 124
                break
            time.sleep(0.05)
    finally:
        _stop(procs)
        for thread in threads:
            thread.join(timeout=_GRACE)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sciinr.distributed`: see `launch`."""
    parser = argparse.ArgumentParser(
        prog="python -m sciinr.distributed",
        description="Run N local processes of a script as one multi-process JAX run "
        "on this machine's CPU (loopback, Gloo collectives). The script calls "
        "sciinr.distributed.initialize() (the examples do with --distributed).",
        epilog="Example: python -m sciinr.distributed --processes 2 "
        "examples/image_regression.py --distributed --steps 200",
    )
    parser.add_argument("-n", "--processes", type=int, default=2)
    parser.add_argument(
        "--devices-per-process", type=int, default=1, help="CPU devices per process"
    )
    parser.add_argument("--port", type=int, default=None, help="coordinator port")
    parser.add_argument(
        "--timeout", type=float, default=None, help="stop everything after (s)"
    )
    parser.add_argument(
        "--no-prefix", action="store_true", help="do not prefix output lines"
    )
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="a Python script and its arguments (run with this interpreter), or "
        "any command after `--`",
    )
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("give the script to run, e.g. examples/image_regression.py")
    if command[0].endswith(".py"):
        command = [sys.executable, *command]
    for name in ("processes", "devices_per_process"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        return launch(
            command,
            args.processes,
            devices_per_process=args.devices_per_process,
            port=args.port,
            timeout=args.timeout,
            prefix=not args.no_prefix,
        )
    except KeyboardInterrupt:
        return 130

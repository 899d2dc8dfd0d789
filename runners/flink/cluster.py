"""A standalone Flink cluster on this machine without Docker (``runners/flink/cluster.sh``).

``start`` runs, from the Flink distribution of ``make flink`` (:func:`dist.flink_home`):

- a JobManager (``bin/jobmanager.sh start``: Flink's ``StandaloneSessionClusterEntrypoint``),
- a TaskManager with ``--slots N`` task slots (``bin/taskmanager.sh start``),
- Beam's Python SDK worker pool (``python -m apache_beam.runners.worker.worker_pool_main``) on
  ``--worker-pool-port``, from this venv: the TaskManager's EXTERNAL environment asks it for SDK
  workers, and it starts each one as a separate process (so N slots can use N cores),

then waits until the REST endpoint reports the TaskManager with its slots. Submit with
``ndcl ... --runner flink --flink-master localhost:8081 --parallelism N`` (the environment
defaults to EXTERNAL at ``localhost:50000``, the pool's default port).

Everything the cluster writes lives in one state folder (default ``.ndcl/flink/cluster/``):
``conf/`` (the generated ``config.yaml`` + Flink's log4j files), ``log/``, ``pid/`` (Flink's own
pid files, ``FLINK_PID_DIR``), ``tmp/`` and ``cluster.json`` (what was started: pids, ports,
command lines). ``stop`` signals only the pids recorded there, after checking that each still
runs the command ``start`` launched (a reused pid is left alone), waits for them to exit
(``SIGKILL`` after ``--grace`` seconds) and reports what it ended; nothing else on the machine
is touched. ``status`` says which recorded processes are alive and what the REST API reports.

Configuration decisions (``config.yaml``): everything binds to localhost; 256 MiB of network
memory (Beam's streaming translation deploys every operator at once, each with its own buffers;
Flink's default 64 MiB ran out); ``pekko.ask.timeout: 60 s`` (the default 10 s timed the
TaskManager registration out while the machine's two cores were busy); a small managed-memory
fraction with the default ``hashmap`` state backend (keyed state lives on the heap), a fifth of
Flink's memory as managed memory with ``--state-backend rocksdb`` (RocksDB's block cache and
write buffers live there, and its state on disk under ``tmp/``: the GroupByKeys of Beam's
streaming translation keep every grouped element in keyed state until the input ends, so with
``hashmap`` the heap must hold them all); ``--tm-memory`` is
``taskmanager.memory.process.size`` (the benchmark's cap).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runners.flink import dist

DEFAULT_REST_PORT = 8081
DEFAULT_WORKER_POOL_PORT = 50000
# What /proc/PID/cmdline must contain for stop to signal a recorded pid.
MARKERS = {"jobmanager": "StandaloneSessionClusterEntrypoint",
           "taskmanager": "TaskManagerRunner",
           "worker_pool": "worker_pool_main"}


class ClusterError(RuntimeError):
    """The cluster cannot be started, or its state is not what ``stop`` expects."""


@dataclass(frozen=True)
class ClusterSpec:
    slots: int = 2
    rest_port: int = DEFAULT_REST_PORT
    rpc_port: int = 6123
    worker_pool_port: int = DEFAULT_WORKER_POOL_PORT
    tm_memory: str = "4g"
    jm_memory: str = "1g"
    state_backend: str = "hashmap"  # or "rocksdb": keyed state off the heap, spilled to disk


@dataclass
class ClusterState:
    spec: ClusterSpec
    state_dir: str
    flink_home: str
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0


def default_state_dir() -> Path:
    return dist.flink_dir() / "cluster"


# Written into a state folder by the first start and never removed: what makes a later start
# allowed to clear that folder's pid/, log/ and tmp/ (NDCL deletes only what it wrote).
STATE_MARKER = ".ndcl-flink-cluster"


def _claim(state_dir: Path) -> None:
    """Make ``state_dir`` the cluster's, refusing a non-empty folder that is not already."""
    marker = state_dir / STATE_MARKER
    if state_dir.is_dir() and any(state_dir.iterdir()) and not marker.is_file():
        raise ClusterError(f"{state_dir} is not empty and was not made by cluster.sh (no "
                           f"{STATE_MARKER}); give an empty or new --state-dir")
    state_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("state folder of runners/flink/cluster.sh\n")


def _state_file(state_dir: Path) -> Path:
    return state_dir / "cluster.json"


def _java_opts(home: Path) -> str:
    """Flink's own ``env.java.opts.all`` (the Java 17 ``--add-opens`` list) from its conf."""
    for line in (home / "conf" / "config.yaml").read_text().splitlines():
        if line.strip().startswith("all: --add-"):
            return line.split(":", 1)[1].strip()
    return ""


def memory_mb(size: str) -> int:
    """``"4g"``, ``"4096m"``, ``"4 gb"`` → MiB."""
    text = size.strip().lower().replace(" ", "").rstrip("b")
    units = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(int(text) / 2**20)  # plain bytes


def task_off_heap_mb(tm_memory: str) -> int:
    """A quarter of the TaskManager's process memory, 256 MiB for 2 GiB or less: the direct
    memory the SDK harness connections need grows with the job's data; below 2 GiB a quarter
    would leave the heap too little (256 MiB was enough for 900k documents)."""
    mb = memory_mb(tm_memory)
    return 256 if mb <= 2048 else mb // 4


STATE_BACKENDS = ("hashmap", "rocksdb")


def write_config(spec: ClusterSpec, home: Path, conf: Path, tmp: Path) -> Path:
    """The cluster's ``conf/``: ``config.yaml`` for ``spec`` and Flink's log4j files."""
    conf.mkdir(parents=True, exist_ok=True)
    for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties"):
        if (home / "conf" / name).is_file():
            shutil.copy(home / "conf" / name, conf / name)
    settings = {
        "jobmanager.rpc.address": "localhost",
        "jobmanager.rpc.port": spec.rpc_port,
        "jobmanager.bind-host": "localhost",
        "jobmanager.memory.process.size": spec.jm_memory,
        "taskmanager.bind-host": "localhost",
        "taskmanager.host": "localhost",
        "taskmanager.numberOfTaskSlots": spec.slots,
        "taskmanager.memory.process.size": spec.tm_memory,
        "taskmanager.memory.network.min": "256mb",
        "taskmanager.memory.network.max": "256mb",
        "taskmanager.memory.managed.fraction": 0.2 if spec.state_backend == "rocksdb" else 0.05,
        "state.backend.type": spec.state_backend,
        # Beam's Fn API data plane (gRPC on Netty) moves every element through direct
        # buffers: with Flink's default (no task off-heap: 384 MiB of direct memory in all)
        # the 184k-post dedup failed with "OutOfMemoryError: Cannot reserve 2097152 bytes of
        # direct buffer memory (allocated: 401072409, limit: 402653184)".
        "taskmanager.memory.task.off-heap.size": f"{task_off_heap_mb(spec.tm_memory)}m",
        "parallelism.default": spec.slots,
        "rest.address": "localhost",
        "rest.bind-address": "localhost",
        "rest.port": spec.rest_port,
        "pekko.ask.timeout": "60 s",
        "io.tmp.dirs": str(tmp),
        # C1 only: for jobs of minutes on two cores, C2 compilation cost more CPU than it won.
        "env.java.opts.all": f"-XX:TieredStopAtLevel=1 {_java_opts(home)}",
    }
    lines = ["# Written by runners/flink/cluster.py start; see its docstring for the choices."]
    lines += [f"{key}: {json.dumps(value) if isinstance(value, str) else value}"
              for key, value in settings.items()]
    path = conf / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _running(pid: int) -> bool:
    """``pid`` exists and has not exited (a zombie not yet reaped counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    try:
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except IndexError:
        return True


def _alive(pid: int, marker: str) -> bool:
    """``pid`` runs and its command line contains ``marker`` (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return _running(pid) and marker in cmdline


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("localhost", port))
        except OSError:
            return False
    return True


def rest_overview(port: int, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://localhost:{port}/overview", timeout=timeout) as r:
            return json.loads(r.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _env(state_dir: Path, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FLINK_HOME=str(home), FLINK_CONF_DIR=str(state_dir / "conf"),
               FLINK_LOG_DIR=str(state_dir / "log"), FLINK_PID_DIR=str(state_dir / "pid"))
    # The worker pool starts each SDK worker as `python -c ...`: this venv's python.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("JAVA_TOOL_OPTIONS", None)
    return env


def _daemon_pid(state_dir: Path, kind: str) -> int:
    # flink-daemon.sh writes flink-$USER-<standalonesession|taskexecutor>.pid, one pid a line.
    name = "standalonesession" if kind == "jobmanager" else "taskexecutor"
    files = list((state_dir / "pid").glob(f"flink-*-{name}.pid"))
    if not files:
        raise ClusterError(f"{kind} wrote no pid file in {state_dir / 'pid'}")
    return int(files[0].read_text().split()[-1])


def load_state(state_dir: Path) -> ClusterState | None:
    try:
        raw = json.loads(_state_file(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return ClusterState(spec=ClusterSpec(**raw["spec"]), state_dir=raw["state_dir"],
                        flink_home=raw["flink_home"], pids=raw["pids"],
                        started_at=raw["started_at"])


def _save(state: ClusterState) -> None:
    _state_file(Path(state.state_dir)).write_text(json.dumps(asdict(state), indent=2) + "\n")


def start(spec: ClusterSpec, state_dir: Path | None = None, timeout_s: float = 120.0
          ) -> ClusterState:
    """Start the JobManager, the TaskManager and the SDK worker pool; wait until ready.
    On any failure what was started is stopped again before the error is raised."""
    state_dir = (state_dir or default_state_dir()).resolve()
    home = dist.flink_home()
    if not (home / "bin" / "jobmanager.sh").is_file():
        raise ClusterError(f"no Flink distribution at {home}: run `make flink`")
    if dist.java_major() is None:
        raise ClusterError("no `java` on PATH (Flink needs Java 11+)")
    old = load_state(state_dir)
    if old and any(_alive(pid, MARKERS[k]) for k, pid in old.pids.items()):
        raise ClusterError(f"a cluster from {state_dir} is already running "
                           f"(pids {sorted(old.pids.values())}); stop it first")
    busy = [p for p in (spec.rest_port, spec.rpc_port, spec.worker_pool_port)
            if not _port_free(p)]
    if busy:
        raise ClusterError(f"port(s) {busy} already in use on localhost; choose others "
                           "(--rest-port, --rpc-port, --worker-pool-port)")
    if spec.slots < 1:
        raise ClusterError(f"--slots must be >= 1, got {spec.slots}")
    _claim(state_dir)
    for sub in ("pid", "log", "tmp"):
        shutil.rmtree(state_dir / sub, ignore_errors=True)
        (state_dir / sub).mkdir(parents=True)
    write_config(spec, home, state_dir / "conf", state_dir / "tmp")
    env = _env(state_dir, home)
    state = ClusterState(spec=spec, state_dir=str(state_dir), flink_home=str(home),
                         started_at=time.time())
    try:
        for kind in ("jobmanager", "taskmanager"):
            proc = subprocess.run([str(home / "bin" / f"{kind}.sh"), "start"], env=env,
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise ClusterError(f"bin/{kind}.sh start failed: "
                                   f"{(proc.stderr or proc.stdout).strip()[-300:]}")
            state.pids[kind] = _daemon_pid(state_dir, kind)
            _save(state)
        log = open(state_dir / "log" / "worker-pool.log", "ab")  # the child keeps it
        pool = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
             f"--service_port={spec.worker_pool_port}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # its own process group: stop ends its SDK workers too
        log.close()
        state.pids["worker_pool"] = pool.pid
        _save(state)
        _wait_ready(state, timeout_s)
    except BaseException:
        stop(state_dir)
        raise
    return state


LOG_NAMES = {"jobmanager": "standalonesession", "taskmanager": "taskexecutor",
             "worker_pool": "worker-pool"}


def _last_error(state_dir: Path, kind: str) -> str:
    """``: <the last error line of its logs>``, or nothing when none is found: a process
    that dies at start (a port taken, too little memory) says why in its own log."""
    lines: list[str] = []
    for path in sorted((state_dir / "log").glob(f"*{LOG_NAMES[kind]}*")):
        try:
            lines += path.read_text(errors="replace").splitlines()
        except OSError:
            continue
    errors = [line.strip() for line in lines if "Exception" in line or "Error" in line]
    return f": {errors[-1][:300]}" if errors else ""


def _wait_ready(state: ClusterState, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for kind, pid in state.pids.items():
            # Not _alive: flink-daemon.sh records the pid of a forked shell that then execs
            # java, so for a moment (longer on a loaded machine) the command line is bash's.
            if not _running(pid):
                raise ClusterError(f"the {kind} (pid {pid}) exited during start"
                                   f"{_last_error(Path(state.state_dir), kind)}; see "
                                   f"{state.state_dir}/log/")
        overview = rest_overview(state.spec.rest_port)
        pool_up = not _port_free(state.spec.worker_pool_port)
        if overview and overview.get("taskmanagers", 0) >= 1 and \
                overview.get("slots-total", 0) >= state.spec.slots and pool_up:
            strangers = [kind for kind, pid in state.pids.items()
                         if not _alive(pid, MARKERS[kind])]
            if strangers:  # a recorded pid that is not the process start began
                raise ClusterError(f"the recorded pid of the {', '.join(strangers)} is not "
                                   f"the process started; see {state.state_dir}/log/")
            return
        time.sleep(0.5)
    raise ClusterError(f"the cluster was not ready within {timeout_s:.0f} s (REST port "
                       f"{state.spec.rest_port}); see {state.state_dir}/log/")


def _signal(pid: int, kind: str, sig: int) -> None:
    try:
        if kind == "worker_pool":
            os.killpg(pid, sig)  # the pool and the SDK workers it started
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop(state_dir: Path | None = None, grace_s: float = 20.0) -> dict[str, str]:
    """End the processes recorded by :func:`start` (and nothing else); returns what happened
    to each: ``stopped``, ``killed`` (after ``grace_s``) or ``not running``."""
    state_dir = (state_dir or default_state_dir()).resolve()
    state = load_state(state_dir)
    if state is None:
        return {}
    outcome = {}
    live = {k: pid for k, pid in state.pids.items() if _alive(pid, MARKERS[k])}
    for kind in state.pids:
        outcome[kind] = "not running"
    for kind, pid in live.items():
        _signal(pid, kind, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        for kind, pid in list(live.items()):
            if not _alive(pid, MARKERS[kind]):
                outcome[kind] = "stopped"
                del live[kind]
        time.sleep(0.2)
    for kind, pid in live.items():
        _signal(pid, kind, signal.SIGKILL)
        outcome[kind] = "killed"
    for kind, pid in live.items():
        for _ in range(50):
            if not _alive(pid, MARKERS[kind]):
                break
            time.sleep(0.1)
    shutil.rmtree(state_dir / "pid", ignore_errors=True)
    _state_file(state_dir).unlink(missing_ok=True)
    return outcome


def status(state_dir: Path | None = None) -> dict[str, Any]:
    state_dir = (state_dir or default_state_dir()).resolve()
    state = load_state(state_dir)
    if state is None:
        return {"running": False, "state_dir": str(state_dir), "processes": {}}
    processes = {k: {"pid": pid, "alive": _alive(pid, MARKERS[k])}
                 for k, pid in state.pids.items()}
    return {"running": all(p["alive"] for p in processes.values()),
            "state_dir": str(state_dir), "processes": processes,
            "rest": f"localhost:{state.spec.rest_port}",
            "worker_pool": f"localhost:{state.spec.worker_pool_port}",
            "overview": rest_overview(state.spec.rest_port)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runners/flink/cluster.sh",
                                     description="A standalone Flink cluster on this machine "
                                                 "(JobManager, TaskManager, SDK worker pool).")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=None,
                        help=f"where conf/log/pid live (default: {default_state_dir()})")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("start", parents=[common], help="start and wait until ready")
    defaults = ClusterSpec()
    up.add_argument("--slots", type=int, default=defaults.slots,
                    help=f"task slots of the TaskManager (default: {defaults.slots})")
    up.add_argument("--rest-port", type=int, default=defaults.rest_port,
                    help=f"Flink REST/UI port: --flink-master localhost:PORT "
                         f"(default: {defaults.rest_port})")
    up.add_argument("--rpc-port", type=int, default=defaults.rpc_port,
                    help=f"JobManager RPC port (default: {defaults.rpc_port})")
    up.add_argument("--worker-pool-port", type=int, default=defaults.worker_pool_port,
                    help=f"Beam SDK worker pool port (default: {defaults.worker_pool_port})")
    up.add_argument("--tm-memory", default=defaults.tm_memory,
                    help="taskmanager.memory.process.size (default: "
                         f"{defaults.tm_memory})")
    up.add_argument("--state-backend", choices=STATE_BACKENDS, default=defaults.state_backend,
                    help="where keyed state lives: the heap (hashmap) or RocksDB (off the heap, "
                         f"spilled to disk) (default: {defaults.state_backend})")
    up.add_argument("--timeout", type=float, default=120.0,
                    help="seconds to wait for readiness (default: 120)")
    down = sub.add_parser("stop", parents=[common],
                          help="stop what start started, and nothing else")
    down.add_argument("--grace", type=float, default=20.0,
                      help="seconds before SIGKILL (default: 20)")
    sub.add_parser("status", parents=[common],
                   help="which recorded processes are alive (exit 0 when all)")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            spec = ClusterSpec(slots=args.slots, rest_port=args.rest_port,
                               rpc_port=args.rpc_port, worker_pool_port=args.worker_pool_port,
                               tm_memory=args.tm_memory, state_backend=args.state_backend)
            begun = time.monotonic()
            state = start(spec, args.state_dir, args.timeout)
            print(f"flink cluster up in {time.monotonic() - begun:.1f} s: REST "
                  f"localhost:{spec.rest_port}, {spec.slots} slots, worker pool "
                  f"localhost:{spec.worker_pool_port}; pids {state.pids}")
            print(f"submit: ndcl ... --runner flink --flink-master localhost:{spec.rest_port} "
                  f"--parallelism {spec.slots}"
                  + ("" if spec.worker_pool_port == DEFAULT_WORKER_POOL_PORT else
                     f" --environment-config localhost:{spec.worker_pool_port}"))
            return 0
        if args.command == "stop":
            outcome = stop(args.state_dir, args.grace)
            print("nothing recorded: no cluster to stop" if not outcome else
                  "stopped: " + ", ".join(f"{k} {v}" for k, v in outcome.items()))
            return 0
        report = status(args.state_dir)
        print(json.dumps(report, indent=2))
        return 0 if report["running"] else 3
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

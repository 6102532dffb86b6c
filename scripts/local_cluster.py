"""Start and stop a Spark standalone master and its workers from the installed pyspark.

For machines without a Docker engine: the daemons run as `spark-class` processes
bound to 127.0.0.1 on free ports, their web UIs included. Each worker has its own
log (`worker-<n>.log`) and work folder (`work/worker-<n>`). The state folder
(default `.local-cluster/`) stores the PIDs, the master URL, the logs and a random
RPC authentication secret, and `stop` signals exactly the PIDs recorded there.

Other users of the machine can reach 127.0.0.1 too, so the cluster requires Spark
RPC authentication. A driver authenticates with the secret from the properties
file that the `properties` command writes: the given base file with the secret
appended (later keys win in a properties file).

    python scripts/local_cluster.py start [--workers 1] [--cores 2] [--memory 4g]
    python scripts/local_cluster.py properties spark-defaults.conf   # prints the file's path
    python scripts/local_cluster.py status
    python scripts/local_cluster.py stop

Tests import `start_cluster` and `stop_cluster`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_STATE_DIR = Path(".local-cluster")
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
INFO_FILE = "cluster.json"
MASTER_URL_FILE = "master-url"
SUBMIT_PROPERTIES_FILE = "spark-submit.conf"
STOP_GRACE_SECONDS = 20.0


class ClusterError(RuntimeError):
    """The local cluster could not be started, inspected or stopped."""


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """Addresses and PIDs of one running local cluster, workers in start order."""

    master_url: str
    master_webui_url: str
    worker_webui_urls: tuple[str, ...]
    master_pid: int
    worker_pids: tuple[int, ...]
    state_dir: str

    @property
    def worker_pid(self) -> int:
        """PID of the first worker."""
        return self.worker_pids[0]

    @property
    def worker_webui_url(self) -> str:
        """Web UI address of the first worker."""
        return self.worker_webui_urls[0]

    @property
    def pids(self) -> tuple[int, ...]:
        """PIDs of the master and every worker."""
        return (self.master_pid, *self.worker_pids)


def free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def spark_home() -> Path:
    """Return the Spark installation inside the pyspark package of this Python."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _auth_settings(secret: str) -> str:
    return f"spark.authenticate true\nspark.authenticate.secret {secret}\n"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file that only the current user can read."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def _write_daemon_conf(state_dir: Path, secret: str) -> Path:
    """Write the daemons' spark-defaults.conf into a private folder and return the folder."""
    conf_dir = state_dir / "conf"
    conf_dir.mkdir(mode=0o700, exist_ok=True)
    # The master's REST submission server listens on the fixed port 6066 unless disabled.
    settings = "spark.master.rest.enabled false\n" + _auth_settings(secret)
    _write_private(conf_dir / "spark-defaults.conf", settings)
    return conf_dir


def _daemon_environment(conf_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SPARK_HOME"] = str(spark_home())
    env["SPARK_CONF_DIR"] = str(conf_dir)
    # The web UIs bind to SPARK_LOCAL_IP, and to every interface when it is unset.
    env["SPARK_LOCAL_IP"] = HOST
    env.setdefault("SPARK_DAEMON_MEMORY", "512m")
    return env


def _launch(command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # A new session keeps the daemons alive after this script exits and out of
        # reach of a Ctrl-C sent to the terminal that started them.
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def fetch_master_status(webui_url: str, timeout: float = 5.0) -> dict:
    """Return the master's status JSON (workers, their state, applications)."""
    with urllib.request.urlopen(f"{webui_url}/json", timeout=timeout) as response:
        return json.load(response)


def _log_tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait_for_workers(
    info: ClusterInfo, processes: dict[str, tuple[subprocess.Popen, Path]], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no response yet"
    while time.monotonic() < deadline:
        for name, (process, log_path) in processes.items():
            if process.poll() is not None:
                raise ClusterError(
                    f"The Spark {name} (PID {process.pid}) exited with code "
                    f"{process.returncode} while the cluster started. "
                    f"Last lines of {log_path}:\n{_log_tail(log_path)}"
                )
        try:
            status = fetch_master_status(info.master_webui_url)
        except (urllib.error.URLError, OSError, ValueError) as error:
            last_error = str(error)
        else:
            alive = [w for w in status.get("workers", []) if w.get("state") == "ALIVE"]
            if len(alive) >= len(info.worker_pids):
                return
            last_error = (
                f"master status shows {len(alive)} of {len(info.worker_pids)} workers ALIVE"
            )
        time.sleep(1.0)
    raise ClusterError(
        f"The workers did not register with {info.master_url} within {timeout:.0f} s "
        f"({last_error}). See master.log and the worker-<n>.log files in {info.state_dir}."
    )


def read_info(state_dir: Path) -> ClusterInfo | None:
    """Return the recorded cluster in ``state_dir``, or None when none was recorded."""
    path = state_dir / INFO_FILE
    if not path.exists():
        return None
    fields = json.loads(path.read_text())
    # A cluster.json from an older version of this script records a single worker_pid.
    if "worker_pid" in fields:
        fields["worker_pids"] = [fields.pop("worker_pid")]
        fields["worker_webui_urls"] = [fields.pop("worker_webui_url")]
    fields["worker_pids"] = tuple(fields["worker_pids"])
    fields["worker_webui_urls"] = tuple(fields["worker_webui_urls"])
    return ClusterInfo(**fields)


def _is_daemon(pid: int, main_class: str) -> bool:
    """Return whether ``pid`` is a live Spark daemon of ``main_class``, not a reused PID."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return main_class in process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def is_running(info: ClusterInfo) -> bool:
    """Return whether the recorded master and every recorded worker are still running."""
    return _is_daemon(info.master_pid, MASTER_CLASS) and all(
        _is_daemon(pid, WORKER_CLASS) for pid in info.worker_pids
    )


def start_cluster(
    state_dir: Path = DEFAULT_STATE_DIR,
    *,
    cores: int = 1,
    memory: str = "1g",
    timeout: float = 180.0,
    workers: int = 1,
) -> ClusterInfo:
    """Start a master and ``workers`` workers on 127.0.0.1 and wait until all are ALIVE.

    ``cores`` and ``memory`` are what each worker offers to executors (memory in
    Spark's notation, for example ``1g``). Raises ClusterError when a cluster
    recorded in ``state_dir`` still runs. Also raises ClusterError when the workers
    do not register within ``timeout`` seconds, after stopping every process.
    """
    if workers < 1:
        raise ClusterError(
            f"Invalid number of workers: {workers}. Start at least 1 worker "
            "(--workers, or LOCAL_WORKERS for `make local-cluster-up`)."
        )
    state_dir = Path(state_dir).absolute()
    previous = read_info(state_dir)
    if previous is not None and (
        _is_daemon(previous.master_pid, MASTER_CLASS)
        or any(_is_daemon(pid, WORKER_CLASS) for pid in previous.worker_pids)
    ):
        raise ClusterError(
            f"A local cluster recorded in {state_dir} is still running at "
            f"{previous.master_url}. Stop it first with `make local-cluster-down`."
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    env = _daemon_environment(_write_daemon_conf(state_dir, secret))
    spark_class = str(spark_home() / "bin" / "spark-class")

    master_port, master_webui = free_port(), free_port()
    master_url = f"spark://{HOST}:{master_port}"
    master_log = state_dir / "master.log"
    master = _launch(
        [spark_class, MASTER_CLASS, "--host", HOST, "--port", str(master_port),
         "--webui-port", str(master_webui)],
        master_log,
        env,
    )  # fmt: skip
    processes = {"master": (master, master_log)}

    worker_webui_urls = []
    for number in range(1, workers + 1):
        worker_port, worker_webui = free_port(), free_port()
        work_dir = state_dir / "work" / f"worker-{number}"
        work_dir.mkdir(parents=True, exist_ok=True)
        worker_log = state_dir / f"worker-{number}.log"
        worker = _launch(
            [spark_class, WORKER_CLASS, "--host", HOST, "--port", str(worker_port),
             "--webui-port", str(worker_webui), "--cores", str(cores), "--memory", memory,
             "--work-dir", str(work_dir), master_url],
            worker_log,
            env,
        )  # fmt: skip
        processes[f"worker {number}"] = (worker, worker_log)
        worker_webui_urls.append(f"http://{HOST}:{worker_webui}")

    worker_pids = tuple(process.pid for name, (process, _) in processes.items() if name != "master")
    info = ClusterInfo(
        master_url=master_url,
        master_webui_url=f"http://{HOST}:{master_webui}",
        worker_webui_urls=tuple(worker_webui_urls),
        master_pid=master.pid,
        worker_pids=worker_pids,
        state_dir=str(state_dir),
    )
    # Record the PIDs before waiting, so that `stop` finds them even if this script dies.
    (state_dir / INFO_FILE).write_text(json.dumps(dataclasses.asdict(info), indent=2) + "\n")
    logger.info(
        "started master (PID %d) and %d workers (PIDs %s)",
        master.pid,
        workers,
        ", ".join(str(pid) for pid in worker_pids),
    )

    try:
        _wait_for_workers(info, processes, timeout)
    except BaseException:
        stop_cluster(state_dir)
        raise
    # The master URL file is written last: its presence means the cluster accepts jobs.
    (state_dir / MASTER_URL_FILE).write_text(master_url + "\n")
    return info


def write_submit_properties(state_dir: Path, base_properties: Path) -> Path:
    """Write ``base_properties`` plus the cluster's secret to a private file; return its path.

    spark-submit reads one ``--properties-file``, so the secret is layered onto the
    base file by appending it: in a properties file the last value of a key wins.
    """
    state_dir = Path(state_dir).absolute()
    if read_info(state_dir) is None:
        raise ClusterError(
            f"No local cluster is recorded in {state_dir}. Start one with `make local-cluster-up`."
        )
    daemon_conf = (state_dir / "conf" / "spark-defaults.conf").read_text()
    secret_lines = [line for line in daemon_conf.splitlines() if line.startswith("spark.authent")]
    text = Path(base_properties).read_text()
    if not text.endswith("\n"):
        text += "\n"
    text += "\n# Added by scripts/local_cluster.py for this cluster only.\n"
    text += "\n".join(secret_lines) + "\n"
    target = state_dir / SUBMIT_PROPERTIES_FILE
    _write_private(target, text)
    return target


def _stop_process(pid: int, main_class: str) -> bool:
    if not _is_daemon(pid, main_class):
        return False
    process = psutil.Process(pid)
    process.send_signal(signal.SIGTERM)
    try:
        # For a child of this process, wait() also reaps it, so no zombie remains.
        process.wait(timeout=STOP_GRACE_SECONDS)
    except psutil.TimeoutExpired:
        logger.warning("PID %d did not stop within %.0f s, killing it", pid, STOP_GRACE_SECONDS)
        process.kill()
        process.wait(timeout=STOP_GRACE_SECONDS)
    return True


def stop_cluster(state_dir: Path = DEFAULT_STATE_DIR) -> list[int]:
    """Stop the workers, then the master recorded in ``state_dir``; return the PIDs stopped.

    Only the recorded PIDs are signalled, and only while their command line still
    names the Spark daemon class, so a PID reused by another program is left alone.
    """
    state_dir = Path(state_dir).absolute()
    info = read_info(state_dir)
    stopped: list[int] = []
    if info is not None:
        daemons = [(pid, WORKER_CLASS) for pid in info.worker_pids]
        daemons.append((info.master_pid, MASTER_CLASS))
        for pid, main_class in daemons:
            if _stop_process(pid, main_class):
                stopped.append(pid)
                logger.info("stopped %s (PID %d)", main_class.rsplit(".", 1)[-1], pid)
    for name in (MASTER_URL_FILE, INFO_FILE, SUBMIT_PROPERTIES_FILE, "conf/spark-defaults.conf"):
        (state_dir / name).unlink(missing_ok=True)
    return stopped


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "properties"])
    parser.add_argument(
        "base_properties",
        nargs="?",
        type=Path,
        default=Path("spark-defaults.conf"),
        help="for `properties`: the file to layer the secret onto (default: %(default)s)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="folder for PIDs, master URL and logs (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="number of workers to start, each with --cores and --memory (default: %(default)s)",
    )
    parser.add_argument(
        "--cores", type=int, default=2, help="cores each worker offers (default: %(default)s)"
    )
    parser.add_argument(
        "--memory",
        default="4g",
        help="memory each worker offers to executors, e.g. 4g (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds to wait for the workers to register (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one command (start, stop, status or properties); return the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = _parse_args(argv)
    try:
        if args.command == "start":
            info = start_cluster(
                args.state_dir,
                cores=args.cores,
                memory=args.memory,
                timeout=args.timeout,
                workers=args.workers,
            )
            print(f"master    {info.master_url}")
            print(f"master UI {info.master_webui_url}")
            for url in info.worker_webui_urls:
                print(f"worker UI {url}")
            return 0
        if args.command == "properties":
            print(write_submit_properties(args.state_dir, args.base_properties))
            return 0
        if args.command == "stop":
            stopped = stop_cluster(args.state_dir)
            if not stopped:
                print(f"No running local cluster was recorded in {args.state_dir}.")
            return 0
        info = read_info(args.state_dir)
        if info is None or not is_running(info):
            print(f"No local cluster is running (state folder {args.state_dir}).")
            return 1
        status = fetch_master_status(info.master_webui_url)
        print(f"master    {info.master_url} (PID {info.master_pid})")
        print(f"master UI {info.master_webui_url}")
        worker_pids = ", ".join(str(pid) for pid in info.worker_pids)
        print(
            f"workers   {status.get('aliveworkers', 0)} of {len(info.worker_pids)} ALIVE "
            f"(PIDs {worker_pids})"
        )
        print(f"running   {len(status.get('activeapps', []))} applications")
        return 0
    except (ClusterError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""A real Triton Inference Server on this machine: the served environment (``build/serving``) and the process.

:func:`serving_env` installs, once, what ``requirements/serving.txt`` pins into ``build/serving/site`` without
dependencies: nvidia-pytriton's ``tritonserver`` with its Python backend, and the numpy<2 its stub needs; it copies
the stub of the running Python into the backend folder, where the backend looks for it. :class:`TritonServer` starts
``tritonserver`` on free 127.0.0.1 ports with explicit model control and always stops it. Tests and ``make triton
TRITON_BACKEND=python`` use them; a GPU deployment runs NVIDIA's own container instead.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pipeline.common.artifacts import atomic_folder, file_sha256, write_json
from pipeline.common.errors import PipelineError

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements" / "serving.txt"
DEFAULT_ENV = ROOT / "build" / "serving"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclasses.dataclass(frozen=True)
class ServingEnv:
    """What :func:`serving_env` installed."""

    root: Path
    site: Path  #: numpy<2 and nvidia-pytriton: first on the served model's sys.path

    @property
    def tritonserver(self) -> Path:
        return self.site / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.site / "pytriton" / "tritonserver" / "backends"


def serving_env(root: Path = DEFAULT_ENV) -> ServingEnv:
    """The served environment in ``root``, installed unless the one there was installed from the same pins for this
    Python (``root/installed.json``). Needs pip and the package index the first time only."""
    env = ServingEnv(root, root / "site")
    stamp = {"requirements_sha256": file_sha256(REQUIREMENTS), "python": PYTHON}
    try:
        if json.loads((root / "installed.json").read_text()) == stamp:
            return env
    except (OSError, ValueError):
        pass  # absent or from an interrupted run: install afresh
    with atomic_folder(root) as tmp:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                   "--only-binary", ":all:", "--target", str(tmp / "site"), "-r", str(REQUIREMENTS)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise PipelineError(f"installing the served environment ({REQUIREMENTS.name}) into {root} failed: {last}; "
                                f"check the network or the package index, then rerun")
        # The backend runs the stub found beside libtriton_python.so; the stub's RPATH reaches the wheel's libraries
        # from there.
        stubs = tmp / "site" / "pytriton" / "tritonserver" / "python_backend_stubs"
        if not (stubs / PYTHON).is_dir():
            raise PipelineError(f"nvidia-pytriton has no Python backend stub for Python {PYTHON} (it has "
                                f"{', '.join(sorted(p.name for p in stubs.iterdir() if p.is_dir()))}); run the "
                                "project with one of those")
        shutil.copy2(stubs / PYTHON / "triton_python_backend_stub",
                     tmp / "site" / "pytriton" / "tritonserver" / "backends" / "python")
        write_json(tmp / "installed.json", stamp)
    return env


def project_python_path() -> list[str]:
    """What a served Python model needs after the served numpy: the project's venv (onnxruntime, torch) and the
    project itself (an editable install's finder is a .pth file, which the stub's sys.path never reads)."""
    return [sysconfig.get_paths()["purelib"], str(ROOT)]


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1 now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


class TritonServer:
    """``tritonserver`` serving ``repositories`` on 127.0.0.1 with explicit model control (nothing loaded until
    :meth:`load`); a context manager that always stops it. Its log goes to ``log``."""

    def __init__(self, env: ServingEnv, repositories: list[Path], log: Path, *, start_timeout: float = 60,
                 ports: tuple[int, int] = (0, 0)) -> None:
        """``ports``: (HTTP, gRPC); 0: free ones."""
        self.env, self.repositories, self.log, self.start_timeout = env, repositories, log, start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.http_port, self.grpc_port = ports

    def url(self, protocol: str) -> str:
        return f"127.0.0.1:{self.grpc_port if protocol == 'grpc' else self.http_port}"

    def start(self) -> TritonServer:
        """Start it (on the ports of an earlier start, if any: a restart) and wait until it is live."""
        if not (self.http_port and self.grpc_port):
            free = iter(free_ports(2))
            self.http_port, self.grpc_port = self.http_port or next(free), self.grpc_port or next(free)
        command = [str(self.env.tritonserver), *(f"--model-repository={r}" for r in self.repositories),
                   f"--backend-directory={self.env.backends}", "--model-control-mode=explicit",
                   "--http-address=127.0.0.1", f"--http-port={self.http_port}", "--grpc-address=127.0.0.1",
                   f"--grpc-port={self.grpc_port}", "--allow-metrics=false", "--exit-timeout-secs=5"]
        # The stub links libpython<major.minor> (this interpreter's, where it has one: pyenv, python.org builds), and
        # its embedded Python takes its prefix (the standard library) from the `python3` it finds on PATH: both this
        # interpreter's base installation, or the two disagree ("No module named '_struct'").
        libdir, bindir = (sysconfig.get_config_var(name) or "" for name in ("LIBDIR", "BINDIR"))
        environment = {"PATH": f"{bindir}:/usr/bin:/bin", "LD_LIBRARY_PATH": libdir, "HOME": str(self.log.parent)}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                            start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PipelineError(f"tritonserver exited with status {self.process.returncode} at start: "
                                    f"{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self.request("GET", "/v2/health/live")[0] == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise PipelineError(f"tritonserver was not live within {self.start_timeout:g} s (log {self.log})")

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM, then SIGKILL after ``grace_s`` (0: at once, as a crash would). Given time, Triton drains its HTTP
        connections and in-flight requests first (up to --exit-timeout-secs), so a busy client may still finish.
        What is left of its session afterwards (the Python backend's stubs outlive a killed server) is killed too."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if grace_s > 0:
                self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def request(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of one call to the server's HTTP API."""
        call = urllib.request.Request(f"http://{self.url('http')}{path}", method=method, data=b"" if method == "POST"
                                      else None)
        try:
            with urllib.request.urlopen(call, timeout=300) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        return status, json.loads(body) if body else {}

    def load(self, model: str) -> None:
        """Load ``model``; a PipelineError with the server's reason when it does not."""
        status, body = self.request("POST", f"/v2/repository/models/{model}/load")
        if status != 200:
            raise PipelineError(f"tritonserver did not load {model}: {body.get('error', status)}")

    def statistics(self, model: str) -> dict[str, Any]:
        """The model's inference statistics (``inference_count``: requests' batch items, ``execution_count``)."""
        status, body = self.request("GET", f"/v2/models/{model}/stats")
        if status != 200:
            raise PipelineError(f"tritonserver has no statistics of {model}: {body.get('error', status)}")
        return body["model_stats"][0]

    def log_tail(self, lines: int = 5) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines() if self.log.is_file() else []
        return " | ".join(text[-lines:]) or "no output"


def served_models(repository: Path) -> list[str]:
    """The models of a repository: its folders holding a config.pbtxt."""
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.serving.tritonserver REPOSITORY`` (``make triton-serve``): serve a repository
    ``make triton TRITON_BACKEND=python`` wrote, on 127.0.0.1, until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Serve a CPU verification route repository with build/serving's "
                                                 "tritonserver on 127.0.0.1 until Ctrl-C")
    parser.add_argument("repository", type=Path)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    args = parser.parse_args(argv)
    models = served_models(args.repository)
    try:
        if not models:
            raise PipelineError(f"{args.repository} holds no model (no <model>/config.pbtxt); write one with "
                                "`make triton TRITON_BACKEND=python`")
        log = args.repository.resolve().parent / f"{args.repository.name}.tritonserver.log"
        with TritonServer(serving_env(), [args.repository.resolve()], log,
                          ports=(args.http_port, args.grpc_port)) as server:
            for model in models:
                server.load(model)
            print(f"serving {', '.join(models)}: gRPC {server.url('grpc')}, HTTP {server.url('http')} (log {log}); "
                  "Ctrl-C stops it", flush=True)
            assert server.process is not None
            status = server.process.wait()  # Ctrl-C: KeyboardInterrupt here, and leaving the block stops it
            raise PipelineError(f"tritonserver exited with status {status}: {server.log_tail()}")
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

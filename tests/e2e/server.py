"""Start real `ehr` server processes for end-to-end tests (real sockets, real TLS)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

EHR = [sys.executable, "-m", "ehr.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(home: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
    env["EHR_HOME"] = str(home)
    env["EHR_MLLP_PORT"] = "0"  # no MLLP listener unless a test asks for one (on a free port)
    if database_url:
        env["EHR_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def ehr(home: Path, *args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EHR, *args], env=environment(home, database_url), capture_output=True, text=True, timeout=120
    )


def client_context(home: Path, cert: str | None = "client") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=home / "pki" / "ca.pem")
    if cert:
        context.load_cert_chain(home / "pki" / f"{cert}.pem", home / "pki" / f"{cert}-key.pem")
    return context


@contextmanager
def running_server(
    home: Path, database_url: str | None = None, workers: int = 1, port: int | None = None, **extra: str
) -> Iterator[str]:
    """Serve until the block ends; yields the FHIR base URL once /metadata answers over TLS.
    ``extra`` are more EHR_* environment variables."""
    port = port or free_port()
    env = environment(home, database_url, EHR_PORT=str(port), EHR_WORKERS=str(workers), **extra)
    process = subprocess.Popen([*EHR, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{port}/fhir"
    try:
        wait_ready(base, home, process)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


@contextmanager
def serve_process(home: Path, database_url: str | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A server process the test stops (or kills) itself; yields it and the FHIR base once ready.
    Killed if still running when the block ends."""
    port = free_port()
    env = environment(home, database_url, EHR_PORT=str(port))
    process = subprocess.Popen([*EHR, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"https://127.0.0.1:{port}/fhir"
    try:
        wait_ready(base, home, process)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def wait_ready(base: str, home: Path, process: subprocess.Popen[bytes]) -> None:
    context = client_context(home, None)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"server exited with {process.returncode}:\n{output[-4000:]}")
        try:
            if httpx.get(f"{base}/metadata", verify=context, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server did not become ready in 60 s")

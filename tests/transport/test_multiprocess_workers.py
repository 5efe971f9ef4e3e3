"""EhrServerConfig under uvicorn's Multiprocess supervisor: spawned workers, one shared socket.

The supervisor runs in a spawned process of its own (it installs signal handlers, which
only a main thread may do) and is stopped with SIGTERM, as an operator would stop it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import ssl
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn.supervisors.multiprocess import Multiprocess

from ehr.pki import DevPki, certificate_thumbprint, ensure_dev_pki
from ehr.tls import EhrServerConfig, peer_certificate_pem

WORKERS = 2


async def pid_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Which worker answered, and which certificate it saw."""
    if scope["type"] != "http":
        return
    pem = peer_certificate_pem(scope)
    body = {"pid": os.getpid(), "thumbprint": certificate_thumbprint(pem) if pem else None}
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def make_config(pki: DevPki) -> EhrServerConfig:
    return EhrServerConfig(
        pid_app,
        host="127.0.0.1",
        port=0,
        certfile=pki.server_cert,
        keyfile=pki.server_key,
        client_ca=pki.ca_cert,
        workers=WORKERS,
        lifespan="off",
        log_config=None,
        access_log=False,
    )


def supervise(pki_dir: Path, report: Connection) -> None:
    """Supervisor process: bind once, tell the test the port, run the workers until SIGTERM."""
    config = make_config(ensure_dev_pki(pki_dir))
    sock = config.bind_socket()
    report.send(sock.getsockname()[1])
    report.close()
    Multiprocess(config, sockets=[sock]).run()
    sock.close()


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[tuple[int, int, DevPki]]:
    pki = ensure_dev_pki(tmp_path / "pki")
    spawn = multiprocessing.get_context("spawn")
    receiving, sending = spawn.Pipe(duplex=False)
    process = spawn.Process(target=supervise, args=(pki.directory, sending))
    process.start()
    sending.close()
    try:
        assert receiving.poll(30), "the supervisor did not report its port"
        port = receiving.recv()
        assert process.pid is not None
        yield process.pid, port, pki
    finally:
        receiving.close()
        process.terminate()
        process.join(timeout=30)
        exitcode = process.exitcode
        process.close()
    assert exitcode == 0, f"supervisor exit code {exitcode}"


def test_config_survives_pickling_before_load(tmp_path: Path) -> None:
    config = make_config(ensure_dev_pki(tmp_path / "pki"))

    clone = pickle.loads(pickle.dumps(config))
    clone.load()

    assert isinstance(clone.ssl, ssl.SSLContext)
    assert clone.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    assert clone.ssl.verify_mode == ssl.CERT_OPTIONAL


@pytest.mark.slow
def test_every_worker_sees_the_verified_client_certificate(supervisor: tuple[int, int, DevPki]) -> None:
    supervisor_pid, port, pki = supervisor
    context = ssl.create_default_context(cafile=pki.ca_cert)
    context.load_cert_chain(pki.client_cert, pki.client_key)
    expected = certificate_thumbprint(pki.client_cert.read_bytes())

    answers = _until_all_workers_answer(f"https://localhost:{port}/", context)

    assert len({a["pid"] for a in answers}) == WORKERS
    assert supervisor_pid not in {a["pid"] for a in answers}
    assert {a["thumbprint"] for a in answers} == {expected}


def _until_all_workers_answer(url: str, context: ssl.SSLContext) -> list[dict[str, Any]]:
    """New connection per request, so the kernel hands them to whichever worker accepts.

    uvicorn's bind_socket() does not listen(); each worker does once it has started, so
    connections are refused until the first worker is up.
    """
    answers: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while len({a["pid"] for a in answers}) < WORKERS and time.monotonic() < deadline:
        with httpx.Client(verify=context, timeout=10) as client:
            try:
                answers.append(client.get(url).json())
            except httpx.ConnectError:
                time.sleep(0.1)
    return answers

"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) for the DICOMweb tests.

Each server is our own process with its own config in a temp folder: a free HTTP port on
127.0.0.1, the DICOM port off, remote access off, storage in the temp folder, the DICOMweb
plugin loaded; never the packaged service or its port. Missing Orthanc skips the tests outside
CI and fails them inside CI (``CI=true``), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must install it (apt-get install orthanc orthanc-dicomweb)")
    pytest.skip(reason)


def need_client() -> None:
    """dicomweb-client (the ``pacs`` extra, installed by ``make install``): skip without it, fail in CI."""
    import importlib.util

    if importlib.util.find_spec("dicomweb_client") is None:
        _unavailable('dicomweb-client is not installed (pip install "medcondense[pacs]")')


def find_orthanc() -> tuple[str, str]:
    """(Orthanc executable, DICOMweb plugin); skips (fails in CI) when either is missing."""
    exe = os.environ.get("MEDCONDENSE_ORTHANC") or shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None)
    if exe is None:
        _unavailable("Orthanc is not installed (Debian: apt-get install orthanc orthanc-dicomweb)")
    plugin = os.environ.get("MEDCONDENSE_ORTHANC_DICOMWEB") or next(
        (p for p in PLUGIN_CANDIDATES if Path(p).is_file()), None)
    if plugin is None:
        _unavailable("the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
    return exe, plugin  # type: ignore[return-value]


PACKAGED_PORTS = {8042, 4242}  # the packaged service's HTTP and DICOM ports: never ours


def free_port() -> int:
    """A port nothing listens on now (the OS's choice), never the packaged service's."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in PACKAGED_PORTS:
            return port


def _up(url: str, auth: tuple[str, str] | None) -> bool:
    request = urllib.request.Request(url + "/system")
    if auth is not None:
        import base64

        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@contextmanager
def orthanc(folder: Path, *, users: dict[str, str] | None = None) -> Iterator[str]:
    """Start an Orthanc in ``folder``; yield its DICOMweb root URL; stop exactly that process."""
    exe, plugin = find_orthanc()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "medcondense-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpThreadsCount": 8,
        "SaveJobs": False,
        "StorageCompression": False,
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen([exe, str(cfg)], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    auth = next(iter(users.items())) if users else None
    try:
        deadline = time.monotonic() + 60
        while not _up(base, auth):
            if process.poll() is not None:
                log.flush()
                tail = (folder / "orthanc.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Orthanc exited with {process.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not answer GET /system within 60 s")
            time.sleep(0.1)
        yield base + "/dicom-web"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()

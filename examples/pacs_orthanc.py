#!/usr/bin/env python
"""Ingest from a PACS: start a local Orthanc, upload the example DICOM, ingest over DICOMweb.

A worked example of ``medcondense ingest https://.../dicom-web``. It

1. builds the example DICOM tree (``brain_patches.py``, task ``aal10``, small by default) unless
   ``--dicom DIR`` names one that exists (a tree with its ``manifest.csv``);
2. starts Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) as a process of its own: config,
   storage and log in ``OUT/orthanc``, a free port on 127.0.0.1, the DICOM port and remote access
   off (the packaged service, if any, is left alone);
3. uploads every file with STOW-RS (dicomweb-client, ``pip install "medcondense[pacs]"``);
4. turns the tree's path-keyed manifest into a ``series_uid``-keyed labels sheet, the kind a
   hospital keeps (a PACS has no file paths), and runs, as a user would::

       medcondense ingest http://127.0.0.1:PORT/dicom-web --labels OUT/series_labels.csv -o OUT/data.h5

5. stops Orthanc (``--keep-running`` leaves it up and prints its URL, for trying other options).

Usage::

    python examples/pacs_orthanc.py --out examples/generated/pacs
    python examples/pacs_orthanc.py --out /tmp/pacs --dicom examples/generated/aal10/dicom
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

log = logging.getLogger("medcondense.examples.pacs_orthanc")

EXAMPLES_DIR = Path(__file__).resolve().parent
PLUGINS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")
INSTALL_HINT = "sudo apt-get install orthanc orthanc-dicomweb"
UPLOAD_BATCH = 50


def find_orthanc() -> tuple[str, str]:
    """The Orthanc executable and its DICOMweb plugin; SystemExit with the install command if absent."""
    exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None)
    plugin = next((p for p in PLUGINS if Path(p).is_file()), None)
    if exe is None or plugin is None:
        raise SystemExit(f"Orthanc with its DICOMweb plugin is not installed: {INSTALL_HINT}")
    return exe, plugin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_orthanc(folder: Path) -> tuple[subprocess.Popen, str]:
    """Start our own Orthanc with its config in ``folder``; return (process, DICOMweb root URL)."""
    exe, plugin = find_orthanc()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "medcondense-example", "HttpPort": port,
        "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "storage"),
        "DicomServerEnabled": False, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "SaveJobs": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    with open(folder / "orthanc.log", "wb") as out:
        process = subprocess.Popen([exe, str(folder / "orthanc.json")], cwd=folder, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/system", timeout=2):
                break
        except (urllib.error.URLError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                stop_orthanc(process)
                raise SystemExit(f"Orthanc did not start; see {folder / 'orthanc.log'}") from None
            time.sleep(0.1)
    return process, base + "/dicom-web"


def stop_orthanc(process: subprocess.Popen) -> None:
    """Stop exactly the Orthanc this script started."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def example_tree(out: Path, train: int, test: int) -> Path:
    """Build the aal10 DICOM tree with ``brain_patches.py``; return the tree folder."""
    spec = importlib.util.spec_from_file_location("examples_brain_patches", EXAMPLES_DIR / "brain_patches.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.build_task("aal10", out, "dicom", train, test, 0, overwrite=True)
    return out / "dicom"


def upload(url: str, files: list[Path]) -> int:
    """STOW-RS every file, in batches; returns the number uploaded."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url)
    for start in range(0, len(files), UPLOAD_BATCH):
        client.store_instances([pydicom.dcmread(f) for f in files[start:start + UPLOAD_BATCH]])
    return len(files)


def series_sheet(manifest: Path, out: Path) -> Path:
    """The path-keyed manifest as a series_uid-keyed sheet (label, patient and split kept)."""
    import pydicom

    with manifest.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["series_uid", "label", "patient", "split"])
        for row in rows:
            ds = pydicom.dcmread(manifest.parent / row["path"], stop_before_pixels=True)
            writer.writerow([ds.SeriesInstanceUID, row["label"], row["patient"], row["split"]])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("examples/generated/pacs"), help="output folder")
    parser.add_argument("--dicom", type=Path, help="an existing brain_patches DICOM tree (with manifest.csv)")
    parser.add_argument("--train-per-class", type=int, default=6, help="patches per class for the built tree")
    parser.add_argument("--test-per-class", type=int, default=2)
    parser.add_argument("--size", type=int, default=32, help="ingest --size")
    parser.add_argument("--keep-running", action="store_true", help="leave Orthanc running at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tree = args.dicom or example_tree(out / "tree", args.train_per_class, args.test_per_class)
    manifest = tree / "manifest.csv"
    files = sorted(p for p in tree.rglob("*.dcm"))
    process, url = start_orthanc(out / "orthanc")
    try:
        log.info("Orthanc at %s: uploading %d files with STOW-RS", url, upload(url, files))
        sheet = series_sheet(manifest, out / "series_labels.csv")
        command = [sys.executable, "-m", "medcondense", "ingest", url, "--labels", str(sheet),
                   "--size", str(args.size), "-o", str(out / "data.h5"), "--overwrite", "--json"]
        log.info("$ medcondense ingest %s --labels %s --size %d -o %s", url, sheet, args.size, out / "data.h5")
        result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        sys.stderr.write(result.stderr)
        sys.stdout.write(result.stdout)
        if args.keep_running:
            log.info("Orthanc keeps running at %s (pid %d); stop it with: kill %d", url, process.pid, process.pid)
        return result.returncode
    finally:
        if not args.keep_running:
            stop_orthanc(process)


if __name__ == "__main__":
    sys.exit(main())

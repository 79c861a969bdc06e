"""DICOMweb as an ingest input, against a real Orthanc (tests/ingest/orthanc_server.py).

The tree is the demo's DICOM writer (examples/brain_patches.py) re-keyed to three patients with
one study per patient and class, accession numbers and PHI-like values set, uploaded with STOW-RS.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ingest_helpers import bundled
from orthanc_server import free_port, need_client, orthanc
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app

need_client()

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
# PHI-like values written into every uploaded file; none may reach any output byte
PATIENT_IDS = {"ch2-left": "MRN-77310-L", "ch2-left-val": "MRN-77311-V", "ch2-right": "MRN-77312-R"}
PHI = {"PatientName": "Quixote^Alonso", "PatientBirthDate": "19471103",
       "InstitutionName": "Hospital Santa Quiteria", "ReferringPhysicianName": "Sancho^Panza"}
JPEG_LS_NEAR = "1.2.840.10008.1.2.4.81"


def ingest(*args: object):
    return runner.invoke(app, ["ingest", *map(str, args), "--size", "16"])


def load_brain_patches():
    name = "examples_brain_patches"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "examples" / "brain_patches.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def write_sheet(path: Path, header: list[str], rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    with orthanc(tmp_path_factory.mktemp("orthanc")) as url:
        yield url


@pytest.fixture(scope="module")
def tree(tmp_path_factory, server) -> dict:
    """The demo tree (4 classes x 3 patients, one study per patient and class), uploaded."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient
    from pydicom.uid import generate_uid

    bp = load_brain_patches()
    patches = bp.build_patches("aal_lobes4", train_per_class=2, test_per_class=1, val_per_class=1, seed=0)
    root = tmp_path_factory.mktemp("tree") / "dicom"
    rows = list(csv.DictReader(bp.write_dicom_tree(patches, root).open(encoding="utf-8")))
    (root / "manifest.csv").unlink()  # beside the tree, so that other sheets see only images
    manifest = write_sheet(root.parent / "manifest.csv", list(rows[0]),
                           [{**r, "path": f"dicom/{r['path']}"}.values() for r in rows])
    studies: dict[tuple[str, str], tuple[str, str]] = {}
    records, datasets = [], []
    for row in rows:
        key = (row["patient"], row["label"])
        if key not in studies:
            studies[key] = (generate_uid(entropy_srcs=["pacs-test", *key]), f"ACC{9100 + len(studies)}")
        study_uid, accession = studies[key]
        ds = pydicom.dcmread(root / row["path"])
        ds.StudyInstanceUID, ds.AccessionNumber = study_uid, accession
        ds.PatientID = PATIENT_IDS[row["patient"]]
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        ds.save_as(root / row["path"], enforce_file_format=True)
        datasets.append(ds)
        records.append({**row, "study_uid": study_uid, "series_uid": str(ds.SeriesInstanceUID),
                        "sop_uid": str(ds.SOPInstanceUID), "accession": accession})
    DICOMwebClient(server).store_instances(datasets)
    phi = set(PHI.values()) | set(PATIENT_IDS.values()) | {r["accession"] for r in records} \
        | {r["study_uid"] for r in records} | {r["series_uid"] for r in records} | {r["sop_uid"] for r in records}
    return {"root": root, "manifest": manifest, "records": records, "phi": phi}


def by_series(path: Path) -> dict[str, tuple]:
    """series_key -> (image, label name, split, patient_key) of a single-image-per-series set."""
    data = store.read(path)
    out = {}
    for i, key in enumerate(data.meta["series_key"]):
        out[str(key)] = (data.images[i], data.class_names[int(data.labels[i])], int(data.split[i]),
                         str(data.meta["patient_key"][i]))
    return out


def assert_same(folder_h5: Path, url_h5: Path) -> None:
    a, b = by_series(folder_h5), by_series(url_h5)
    assert sorted(a) == sorted(b) and len(a) == 16
    for key in a:
        np.testing.assert_allclose(a[key][0], b[key][0], atol=1e-6)
        assert a[key][1:] == b[key][1:]


def assert_no_phi(phi: set[str], *blobs: bytes) -> None:
    for value in phi:
        for blob in blobs:
            assert value.encode() not in blob, value


def test_url_gives_the_folder_result_and_no_phi(tree, server, tmp_path):
    """Series-keyed sheet converted from the manifest: same images, labels, splits, patient keys."""
    rows = [(r["series_uid"], r["label"], r["patient"], r["split"]) for r in tree["records"]]
    sheet = write_sheet(tmp_path / "series.csv", ["series_uid", "label", "patient", "split"], rows)
    folder = ingest(tree["root"], "--labels", tree["manifest"], "-o", tmp_path / "folder.h5")
    assert folder.exit_code == 0, folder.output
    url = ingest(server, "--labels", sheet, "-o", tmp_path / "url.h5", "--json")
    assert url.exit_code == 0, url.output
    assert json.loads(url.stdout)["images"] == 16
    assert_same(tmp_path / "folder.h5", tmp_path / "url.h5")
    assert_no_phi(tree["phi"], (tmp_path / "url.h5").read_bytes(), url.stdout.encode(), url.stderr.encode())
    provenance = store.read_attrs(tmp_path / "url.h5")["provenance"]
    assert server not in json.dumps(provenance) and provenance["config"]["inputs"] == ["<path1>"]


def test_study_and_accession_sheets_match_the_folder(tree, server, tmp_path):
    records = tree["records"]
    for key in ("study_uid", "accession"):
        pairs = sorted({(r[key], r["label"]) for r in records})
        sheet = write_sheet(tmp_path / f"{key}.csv", [key, "label"], pairs)
        folder = ingest(tree["root"], "--labels", sheet, "-o", tmp_path / f"{key}_folder.h5")
        workers = ("--workers", "2") if key == "accession" else ()  # reader processes retrieve too
        url = ingest(server, "--labels", sheet, "-o", tmp_path / f"{key}_url.h5", *workers)
        assert folder.exit_code == 0 and url.exit_code == 0, folder.output + url.output
        # the patient keys come from PatientID here (no patient column): equal on both paths
        assert_same(tmp_path / f"{key}_folder.h5", tmp_path / f"{key}_url.h5")


def test_unmatched_rows_and_unlabelled_study_are_reported(tree, server, tmp_path):
    records = tree["records"]
    studies = sorted({(r["study_uid"], r["label"]) for r in records})
    extra = write_sheet(tmp_path / "extra.csv", ["accession", "label"],
                        sorted({(r["accession"], r["label"]) for r in records}) + [("ACC-NOWHERE", "x")])
    result = ingest(server, "--labels", extra, "-o", tmp_path / "extra.h5")
    assert result.exit_code == 2 and "1 row(s) match no input image by accession: line(s) 14" in result.output
    assert "ACC-NOWHERE" not in result.output and not (tmp_path / "extra.h5").exists()
    # QIDO would read ACC91* as a wildcard; a sheet key matches exactly or not at all
    wild = write_sheet(tmp_path / "wild.csv", ["accession", "label"], [(records[0]["accession"], "a"), ("ACC91*", "x")])
    result = ingest(server, "--labels", wild, "-o", tmp_path / "wild.h5")
    assert result.exit_code == 2 and "match no input image by accession: line(s) 3" in result.output
    assert "of 1 study(ies)" in result.output  # the wildcard listed none of the other 11
    # one study left out of the sheet but read (--study lists all): its instances are rejected
    left_out = studies[0][0]
    sheet = write_sheet(tmp_path / "short.csv", ["study_uid", "label"], studies[1:])
    picks = [a for s, _ in studies for a in ("--study", s)]
    query = f"AccessionNumber={records[0]['accession']}"  # adds no study: --study lists them all
    result = ingest(server, *picks, "--query", query, "--labels", sheet, "-o", tmp_path / "short.h5", "--json")
    assert result.exit_code == 4, result.output
    provenance = json.dumps(store.read_attrs(tmp_path / "short.h5")["provenance"])
    assert "<study1>" in provenance and "<query>" in provenance
    assert_no_phi(tree["phi"], provenance.encode(), (tmp_path / "short.h5").read_bytes())
    report = (tmp_path / "short.h5.rejects.csv").read_text()
    wanted = [r for r in records if r["study_uid"] == left_out]
    assert len(report.strip().splitlines()) == 1 + len(wanted)
    for r in wanted:
        assert f"studies/{left_out}/series/{r['series_uid']}/instances/{r['sop_uid']}" in report
    assert "matches no row of the labels CSV (by study_uid)" in report
    assert json.loads(result.stdout)["images"] == 16 - len(wanted)


def test_unknown_study_and_wrong_port_exit_3_naming_the_host(tree, server, tmp_path):
    host = server.split("/")[2]
    result = ingest(server, "--study", "1.2.826.0.1.3680043.10.999.4242", "--label-tag", "Modality",
                    "-o", tmp_path / "a.h5")
    assert result.exit_code == 3 and host in result.output and "not found" in result.output
    assert "4242" not in result.output  # the UID is not echoed
    real = tree["records"][0]["study_uid"]
    studies = write_sheet(tmp_path / "s.csv", ["study_uid", "label"], [(real, "a"), ("1.2.826.0.1.3680043.10.999.4343", "b")])
    result = ingest(server, "--labels", studies, "-o", tmp_path / "a.h5")
    assert result.exit_code == 3 and "1 study(ies) not found on " + host in result.output
    assert "labels CSV's line(s) 3" in result.output and "4343" not in result.output
    port = free_port()
    result = ingest(f"http://127.0.0.1:{port}/dicom-web", "--study", "1.2.3", "--label-tag", "Modality",
                    "-o", tmp_path / "b.h5")
    assert result.exit_code == 3 and f"127.0.0.1:{port}" in result.output
    assert "connection refused" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.glob("*.h5"))


def test_credentials_from_env_and_netrc_never_echoed(tree, tmp_path_factory, tmp_path, monkeypatch):
    """Basic auth: a wrong password and a bearer token are exit 3 without the secret anywhere;
    the right password (environment or ~/.netrc) works."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    password, wrong, token = "pw-right-5150", "pw-WRONG-8675309", "tok-SECRET-31337"
    with orthanc(tmp_path_factory.mktemp("orthanc_auth"), users={"alice": password}) as url:
        session = requests.Session()
        session.auth = ("alice", password)
        record = tree["records"][0]
        import pydicom

        ds = pydicom.dcmread(tree["root"] / record["path"])
        DICOMwebClient(url, session=session).store_instances([ds])
        args = (url, "--study", record["study_uid"], "--label-tag", "Modality")
        for env in ({"MEDCONDENSE_DICOMWEB_USER": "alice", "MEDCONDENSE_DICOMWEB_PASSWORD": wrong},
                    {"MEDCONDENSE_DICOMWEB_TOKEN": token}):
            with monkeypatch.context() as m:
                for name, value in env.items():
                    m.setenv(name, value)
                result = ingest(*args, "-o", tmp_path / "bad.h5", "-v")
            assert result.exit_code == 3, result.output
            assert "refused access (HTTP 401)" in result.output and url.split("/")[2] in result.output
            assert wrong not in result.output and token not in result.output
        assert not list(tmp_path.iterdir())
        monkeypatch.setenv("MEDCONDENSE_DICOMWEB_USER", "alice")
        monkeypatch.setenv("MEDCONDENSE_DICOMWEB_PASSWORD", password)
        ok = ingest(*args, "-o", tmp_path / "env.h5", "--json")
        assert ok.exit_code == 0 and json.loads(ok.stdout)["images"] == 1, ok.output
        monkeypatch.delenv("MEDCONDENSE_DICOMWEB_USER")
        monkeypatch.delenv("MEDCONDENSE_DICOMWEB_PASSWORD")
        netrc = tmp_path_factory.mktemp("home") / ".netrc"
        netrc.write_text(f"machine 127.0.0.1 login alice password {password}\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        ok = ingest(*args, "-o", tmp_path / "netrc.h5")
        assert ok.exit_code == 0, ok.output
        for path in tmp_path.iterdir():
            assert password.encode() not in path.read_bytes()


def test_credentials_in_the_url_are_refused(tmp_path):
    result = ingest("https://alice:pw-IN-URL@pacs.example/dicom-web", "--study", "1.2", "--label-tag", "Modality",
                    "-o", tmp_path / "a.h5")
    assert result.exit_code == 2 and "credentials in the URL" in result.output
    assert "pw-IN-URL" not in result.output


def test_nothing_written_outside_the_output_and_rerun_key(tree, server, tmp_path):
    """A subprocess with its own HOME, TMPDIR and working folder: only the output appears, unless
    --cache; an unchanged QIDO listing skips the rerun, a new instance makes it another run."""
    home, tmp, cwd, out = (tmp_path / n for n in ("home", "tmp", "cwd", "out"))
    for folder in (home, tmp, cwd, out):
        folder.mkdir()
    record = tree["records"][0]
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "MEDCONDENSE_SALT": "s",
           "PYTHONPATH": str(REPO / "src"), "XDG_CONFIG_HOME": str(home / ".config")}
    command = [sys.executable, "-m", "medcondense", "ingest", server, "--study", record["study_uid"],
               "--label-tag", "Modality", "--size", "16", "-o", str(out / "d.h5"), "--json"]

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(command + list(extra), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

    first = run()
    assert first.returncode == 0, first.stderr
    assert [p.name for p in out.iterdir()] == ["d.h5"]
    assert not list(home.rglob("*")) and not list(tmp.iterdir()) and not list(cwd.iterdir())
    assert json.loads(run().stdout)["skipped"] is True
    cache = tmp_path / "cache"
    cached = run("--cache", str(cache), "-o", str(out / "c.h5"))
    assert cached.returncode == 0 and "--cache keeps the retrieved DICOM files" in cached.stderr
    assert len(list(cache.glob("*.dcm"))) == sum(r["study_uid"] == record["study_uid"] for r in tree["records"])
    assert all(p.stat().st_mode & 0o077 == 0 for p in cache.iterdir())  # patient data: owner only
    assert not [p for p in cache.iterdir() if p.suffix != ".dcm"]  # no temporaries or locks left
    # another instance in the study changes the QIDO listing: not the same run any more
    import pydicom
    import requests
    from dicomweb_client.api import DICOMwebClient
    from pydicom.uid import generate_uid

    from medcondense.ingest.dicom import DecodeError
    from medcondense.ingest.dicomweb import RemoteInstance

    rest = server.rsplit("/", 1)[0]
    original = pydicom.dcmread(tree["root"] / record["path"])
    added = pydicom.dcmread(tree["root"] / record["path"])
    added.SeriesInstanceUID, added.SOPInstanceUID = generate_uid(), generate_uid()
    added.file_meta.MediaStorageSOPInstanceUID = added.SOPInstanceUID
    DICOMwebClient(server).store_instances([added])
    try:
        again = run()
        assert again.returncode == 2 and "--overwrite" in again.stderr
        # resume: an instance gone from the server still loads from the cache
        ref = (server, record["study_uid"], record["series_uid"], record["sop_uid"])
        orthanc_id = requests.post(rest + "/tools/lookup", data=record["sop_uid"]).json()[0]["ID"]
        requests.delete(rest + "/instances/" + orthanc_id).raise_for_status()
        with pytest.raises(DecodeError, match="HTTP 404"):
            RemoteInstance(*ref).load()
        assert RemoteInstance(*ref, cache=str(cache)).load().SOPInstanceUID == record["sop_uid"]
    finally:  # leave the module's server as the other tests expect it
        found = requests.post(rest + "/tools/lookup", data=added.SOPInstanceUID).json()
        requests.delete(rest + "/instances/" + found[0]["ID"])
        DICOMwebClient(server).store_instances([original])


def test_compressed_and_multiframe_instances(server, tmp_path):
    """A JPEG-LS and a multi-frame JPEG 2000 instance from pydicom-data arrive in their stored
    syntax and are decoded, or rejected naming the syntax."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient
    from pydicom.uid import generate_uid

    from medcondense.ingest.dicomweb import RemoteInstance

    uploads = []
    for name, patient in (("JPEGLSNearLossless_16.dcm", "LS-1"), ("emri_small_jpeg_2k_lossless.dcm", "MF-1")):
        ds = pydicom.dcmread(bundled(name))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.PatientID, ds.Modality = patient, ds.get("Modality") or "OT"
        ds.SOPClassUID = ds.get("SOPClassUID") or "1.2.840.10008.5.1.4.1.1.7"
        uploads.append(ds)
    DICOMwebClient(server).store_instances(uploads)
    jpeg_ls, multiframe = uploads
    arrived = RemoteInstance(server, jpeg_ls.StudyInstanceUID, jpeg_ls.SeriesInstanceUID, jpeg_ls.SOPInstanceUID).load()
    assert arrived.file_meta.TransferSyntaxUID == JPEG_LS_NEAR
    sheet = write_sheet(tmp_path / "s.csv", ["study_uid", "label"],
                        [(jpeg_ls.StudyInstanceUID, "ls"), (multiframe.StudyInstanceUID, "mf")])
    result = ingest(server, "--labels", sheet, "-o", tmp_path / "c.h5", "--json")
    assert result.exit_code in (0, 4), result.output
    rejects = (tmp_path / "c.h5.rejects.csv").read_text() if result.exit_code == 4 else ""
    has_libjpeg = importlib.util.find_spec("libjpeg") is not None
    has_openjpeg = importlib.util.find_spec("openjpeg") is not None
    if not has_libjpeg:
        assert f"instances/{jpeg_ls.SOPInstanceUID}" in rejects and "JPEG-LS" in rejects and JPEG_LS_NEAR in rejects
    summary = json.loads(result.stdout)
    expected = (1 if has_libjpeg else 0) + (10 if has_openjpeg else 0)
    assert summary["images"] == expected
    if not has_openjpeg:
        assert "JPEG 2000" in rejects


def test_missing_extra_is_named(tmp_path):
    """Without dicomweb-client a URL input is exit 2 naming medcondense[pacs]."""
    code = ("import sys; sys.modules['dicomweb_client'] = None; from medcondense.cli import main; "
            f"sys.argv = ['medcondense', 'ingest', 'http://127.0.0.1:9/dicom-web', '--study', '1.2', "
            f"'--label-tag', 'Modality', '-o', {str(tmp_path / 'x.h5')!r}]; main()")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MEDCONDENSE_SALT": "s"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "medcondense[pacs]" in result.stderr and "Traceback" not in result.stderr


def test_interrupt_while_the_server_stalls_exits_130_without_output(tmp_path):
    """A server that accepts the connection and never answers; Ctrl-C ends the run cleanly."""
    import signal
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(60)
        port = listener.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MEDCONDENSE_SALT": "s"}
        process = subprocess.Popen(
            [sys.executable, "-m", "medcondense", "ingest", f"http://127.0.0.1:{port}/dicom-web",
             "--study", "1.2.3", "--label-tag", "Modality", "-o", str(tmp_path / "d.h5")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        connection, _ = listener.accept()  # the QIDO request is on its way: the run is waiting
        with connection:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "interrupted" in stderr
    assert not list(tmp_path.iterdir())


def test_a_server_refusing_any_syntax_is_asked_for_its_default(tmp_path):
    """A small real HTTP server that answers 406 to transfer-syntax=* and serves the instance
    uncompressed otherwise: the instance still arrives."""
    import http.server
    import threading

    import numpy as np
    from ingest_helpers import make_dataset

    from medcondense.ingest.dicomweb import RemoteInstance

    ds = make_dataset(np.arange(64, dtype=np.int16).reshape(8, 8), patient="X")
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    body = (tmp_path / "x.dcm").read_bytes()
    accepts: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            accepts.append(self.headers.get("Accept", ""))
            if "transfer-syntax=*" in accepts[-1]:
                self.send_response(406)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            payload = b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + body + b"\r\n--XyZ--\r\n"
            self.send_response(200)
            self.send_header("Content-Type", 'multipart/related; type="application/dicom"; boundary=XyZ')
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
        got = RemoteInstance(url, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID).load()
    finally:
        server.shutdown()
        server.server_close()
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    assert len(accepts) == 2 and "transfer-syntax=*" in accepts[0] and "transfer-syntax=1.2.840.10008.1.2.1" in accepts[1]

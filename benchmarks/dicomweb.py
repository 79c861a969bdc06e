"""Benchmark ``medcondense ingest`` from a DICOMweb server against the same series from a folder.

Writes an N-slice 512x512 int16 CT series (``benchmarks/ingest.py``'s generator), starts a local
Orthanc with its DICOMweb plugin (``examples/pacs_orthanc.py``: our own process, free port),
uploads the series with STOW-RS, then ingests it to 64 px in a fresh child process from the
folder and from the URL (per ``--workers``). Reports slices/s (wall and per CPU-second of the
ingest process and its readers; Orthanc's own CPU is not counted) and the child's peak memory,
which shows the bounded batches: it stays near the folder run's, far below the series' size.

    python benchmarks/dicomweb.py                 # 300 slices, workers 1 and 2
    python benchmarks/dicomweb.py --slices 100

Needs Debian ``orthanc`` + ``orthanc-dicomweb`` and ``pip install "medcondense[pacs]"``. Results go
to ``benchmarks/results/dicomweb.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
from medcondense.config import IngestConfig
from medcondense.ingest import pipeline
source, output, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
remote = source.startswith("http")
cfg = IngestConfig(inputs=[source], output=output, size=64, workers=workers, overwrite=True,
                   label_tag="Modality", studies=[sys.argv[4]] if remote else [])
def cpu():
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))
t, c = time.perf_counter(), cpu()
result = pipeline.run(cfg)
seconds, cpu_s = time.perf_counter() - t, cpu() - c
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_s, "images": result["images"],
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_child(source: str, output: Path, workers: int, study: str) -> dict:
    env = dict(os.environ, MEDCONDENSE_SALT=os.environ.get("MEDCONDENSE_SALT", "benchmark"))
    done = subprocess.run([sys.executable, "-c", CHILD, source, str(output), str(workers), study],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"ingest of {source} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(HERE / "results" / "dicomweb.json"))
    args = parser.parse_args()
    bench = load("bench_ingest", HERE / "ingest.py")
    example = load("examples_pacs_orthanc", HERE.parent / "examples" / "pacs_orthanc.py")
    import pydicom

    with tempfile.TemporaryDirectory(prefix="mc-bench-web-") as tmp:
        folder = Path(tmp) / "ct"
        bench.write_series(folder, args.slices)
        files = sorted(folder.iterdir())
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        process, url = example.start_orthanc(Path(tmp) / "orthanc")
        try:
            started = time.perf_counter()
            example.upload(url, files)
            upload_s = time.perf_counter() - started
            runs = []
            for source, name in ((str(folder), "folder"), (url, "dicomweb")):
                for workers in args.workers:
                    r = run_child(source, Path(tmp) / f"{name}{workers}.h5", workers, study)
                    r.update(source=name, workers=workers, slices_per_s=r["images"] / r["seconds"],
                             slices_per_cpu_s=r["images"] / max(r["cpu_seconds"], 1e-9),
                             load_average=os.getloadavg()[0])
                    runs.append(r)
        finally:
            example.stop_orthanc(process)
    record = {
        "benchmark": "dicomweb", "slices": args.slices, "input": "512x512 int16 CT, Orthanc on localhost",
        "series_mb": round(args.slices * 512 * 512 * 2 / 2**20, 1), "output_size": 64,
        "upload_s": round(upload_s, 2),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "runs": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in runs],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ingest {args.slices} slices 512x512 ({record['series_mb']} MB) -> 64 px: folder vs DICOMweb")
    for col in ("source", "workers", "seconds", "slices/s", "CPU s", "slices/CPU-s", "peak RSS MB", "load"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(r["source"], str(r["workers"]), f"{r['seconds']:.2f}", f"{r['slices_per_s']:.0f}",
                      f"{r['cpu_seconds']:.2f}", f"{r['slices_per_cpu_s']:.0f}", f"{r['maxrss_mb']:.0f}",
                      f"{r['load_average']:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()

"""Benchmark ``medcondense ingest`` on a synthetic CT series: serial vs ``--workers``.

Writes an N-slice 512x512 int16 CT series (RescaleIntercept -1024) with pydicom into a temporary
folder, ingests it to 64 px once per worker count in a fresh child process, and reports
slices/s (wall clock, and per CPU-second: on a shared machine the wall clock includes waiting
for other people's processes; ``load_average`` is recorded for that reason) and the child's peak memory (ru_maxrss of the child and of its worker processes).

    python benchmarks/ingest.py                 # 1,000 slices, workers 1 and 2
    python benchmarks/ingest.py --slices 200    # a short run

Results go to ``benchmarks/results/ingest.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GOAL = 200.0  # slices per second

CHILD = r"""
import json, resource, sys, time
from medcondense.config import IngestConfig
from medcondense.ingest import pipeline
cfg = IngestConfig(inputs=[sys.argv[1]], output=sys.argv[2], size=64, workers=int(sys.argv[3]), overwrite=True)
def cpu():
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))
t, c = time.perf_counter(), cpu()
result = pipeline.run(cfg)
seconds, cpu_s = time.perf_counter() - t, cpu() - c
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
# without workers, RUSAGE_CHILDREN only sees helper processes forked at import time: not reported
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_s, "images": result["images"],
                  "maxrss_mb": own / 1024, "worker_maxrss_mb": kids / 1024 if cfg.workers > 1 else None}))
"""


def write_series(folder: Path, n: int, size: int = 512) -> float:
    """Write an ``n``-slice CT series; returns the seconds it took."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2
    series, study = generate_uid(), generate_uid()
    for k in range(n):
        pixels = np.where(body, 1024 + 40 + 30 * np.sin(k / 20.0), 0).astype(np.int16)
        pixels += rng.integers(0, 20, size=pixels.shape, dtype=np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "BENCH", study, series
        ds.Modality, ds.InstanceNumber = "CT", k + 1
        ds.ImagePositionPatient = [0.0, 0.0, 1.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"{k:05d}.dcm", enforce_file_format=True)
    return time.perf_counter() - started


def run_child(folder: Path, output: Path, workers: int) -> dict:
    """Ingest in a fresh process so that peak memory is that run's own."""
    env = dict(os.environ, MEDCONDENSE_SALT=os.environ.get("MEDCONDENSE_SALT", "benchmark"))
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(output), str(workers)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ingest.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp:
        folder = Path(tmp) / "ct"
        write_s = write_series(folder, args.slices)
        runs = []
        for workers in args.workers:
            r = run_child(folder, Path(tmp) / f"out{workers}.h5", workers)
            r.update(workers=workers, slices_per_s=r["images"] / r["seconds"],
                     slices_per_cpu_s=r["images"] / max(r["cpu_seconds"], 1e-9), load_average=os.getloadavg()[0])
            runs.append(r)
    record = {
        "benchmark": "ingest", "slices": args.slices, "input": "512x512 int16 CT, intercept -1024",
        "output_size": 64, "goal_slices_per_s": GOAL, "write_series_s": round(write_s, 2),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "runs": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in runs],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ingest: {args.slices} slices 512x512 -> 64 px (goal {GOAL:.0f} slices/s)")
    for col in ("workers", "seconds", "slices/s", "CPU s", "slices/CPU-s", "peak RSS MB", "worker peak MB", "load"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(str(r["workers"]), f"{r['seconds']:.2f}", f"{r['slices_per_s']:.0f}",
                      f"{r['cpu_seconds']:.2f}", f"{r['slices_per_cpu_s']:.0f}",
                      f"{r['maxrss_mb']:.0f}", "-" if r["worker_maxrss_mb"] is None else f"{r['worker_maxrss_mb']:.0f}",
                      f"{r['load_average']:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()

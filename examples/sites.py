#!/usr/bin/env python
"""Several sites with real anatomy from different people, ingested with one protocol.

Each *site* is the brain-region patch task of ``brain_patches.py`` (AAL regions grouped into
classes; train/val from the left hemisphere, test from the right one mirrored) cut from its own
T1 image:

``colin27``
    Colin27 ("ch2"), one man scanned 27 times (shipped in examples/data, BSD-3, mricron-data).
``icbm152``
    The MNI ICBM152 2009a symmetric template: the average of 152 other people's brains, smoother
    than Colin27 and skull-stripped, so it differs from it as another scanner and population
    would. It ships inside the PyPI wheel of nilearn (BSD-3); this script reads the file out of
    the installed package without importing nilearn (``pip install nilearn --no-deps`` is
    enough, or the ``examples`` extra: ``pip install medcondense[examples]``).
``colin27_shifted`` (SIMULATED)
    Colin27 again, through a simulated scanner: a smooth multiplicative bias field (about +-20 %),
    a gamma contrast change (0.8) and Rician noise (3 % of the intensity range). Same person,
    another "scanner"; say so wherever its numbers are reported.

Both templates are in MNI space, so the AAL atlas (on Colin27's grid) is mapped onto each
through the affines (nearest neighbour), as ``brain_patches.py`` does for every task.

The protocol. The first site is ingested with explicit settings; every other site with
``--protocol <first site's data.h5>``, so all files share size, window rule, normalization and
class order and merge without mapping (``medcondense merge``)::

    python examples/sites.py --out work/sites                       # colin27 + icbm152 (+ --shifted)
    python examples/sites.py --out work/sites --sites colin27,colin27_shifted --no-ingest

Writes ``<out>/<site>/nifti/`` (one NIfTI per patch + manifest.csv) and, unless ``--no-ingest``,
``<out>/<site>.h5`` (kind real, every image's site recorded) and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EXAMPLES_DIR = Path(__file__).resolve().parent
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))

import brain_patches  # noqa: E402  (the sibling example: tasks, patch cutting, file trees)

log = logging.getLogger("medcondense.examples.sites")

ICBM152_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
SHIFT = {"bias": 0.2, "gamma": 0.8, "noise": 0.03}
DEFAULT_SITES = ("colin27", "icbm152")
# the first site's explicit ingest settings; the others take them from its file (the protocol)
PROTOCOL_SETTINGS = {"size": 32, "window": "percentile", "normalize": "window"}


class MissingSiteData(FileNotFoundError):
    """A site's template is not installed; the message says how to get it."""


@dataclass(frozen=True)
class Site:
    """One site: its name, where its T1 comes from, the subject id, whether it is simulated."""

    name: str
    subject: str
    source: str  # "shipped", "nilearn" or "shifted"
    description: str

    @property
    def simulated(self) -> bool:
        return self.source == "shifted"


SITES: dict[str, Site] = {
    s.name: s
    for s in (
        Site("colin27", "ch2", "shipped", "Colin27 T1 (one person), shipped in examples/data"),
        Site("icbm152", "icbm152", "nilearn", "MNI ICBM152 2009a T1 (average of 152 people), from the nilearn wheel"),
        Site("colin27_shifted", "ch2", "shifted",
             "SIMULATED: Colin27 through a simulated scanner (bias field, gamma 0.8, Rician noise 3 %)"),
    )
}


# --------------------------------------------------------------------------- templates


def icbm152_path() -> Path:
    """The ICBM152 2009a T1 inside the installed nilearn package (nilearn is not imported)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise MissingSiteData(
            "the icbm152 site needs the MNI ICBM152 template from the nilearn wheel: "
            "pip install nilearn --no-deps (or pip install 'medcondense[examples]')"
        )
    path = Path(spec.origin).parent / "datasets" / "data" / ICBM152_FILE
    if not path.is_file():
        raise MissingSiteData(f"{ICBM152_FILE} is not in the installed nilearn ({path.parent})")
    return path


def scanner_shift(data: np.ndarray, affine: np.ndarray, *, seed: int = 0, bias: float = SHIFT["bias"],
                  gamma: float = SHIFT["gamma"], noise: float = SHIFT["noise"]) -> np.ndarray:
    """A simulated scanner: ``data`` (a T1 volume) with a smooth multiplicative bias field of
    relative amplitude ``bias`` over the head, intensities through ``x ** gamma`` on the volume's
    range, and Rician noise of ``noise`` times that range. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    lo, hi = float(data.min()), float(data.max())
    unit = (data - lo) / max(hi - lo, 1e-6)
    shape = np.array(data.shape, dtype=np.float64)
    axes = [np.linspace(-1.0, 1.0, int(n)) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    # a low-order field: linear gradients plus one quadratic bowl, scaled to +-bias
    a = rng.uniform(-1, 1, size=4)
    field = a[0] * x + a[1] * y + a[2] * z + a[3] * (x ** 2 + y ** 2 + z ** 2 - 1.0)
    field = field / max(float(np.abs(field).max()), 1e-6) * bias
    shifted = np.clip(unit, 0.0, None) ** gamma * np.exp(field)
    sigma = noise
    real = shifted + rng.normal(0.0, sigma, size=data.shape)
    imag = rng.normal(0.0, sigma, size=data.shape)
    shifted = np.sqrt(real ** 2 + imag ** 2)
    return (shifted * (hi - lo) + lo).astype(np.float32)


def shifted_colin27(cache_dir: Path, seed: int = 0) -> Path:
    """Colin27 through :func:`scanner_shift`, written once as ``cache_dir/ch2_shifted_s<seed>.nii``."""
    import nibabel as nib

    out = Path(cache_dir) / f"ch2_shifted_s{seed}.nii"
    if out.is_file():
        return out
    source = brain_patches.resolve_file("ch2.nii.gz")
    image = nib.load(str(source))
    data = np.asanyarray(image.dataobj, dtype=np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.nii")
    nib.save(nib.Nifti1Image(scanner_shift(data, image.affine, seed=seed), image.affine), str(tmp))
    tmp.replace(out)
    return out


def site_t1(site: Site, cache_dir: Path, seed: int = 0) -> Path:
    """The T1 file of a site (building the simulated one when needed)."""
    if site.source == "shipped":
        return brain_patches.resolve_file("ch2.nii.gz")
    if site.source == "nilearn":
        return icbm152_path()
    return shifted_colin27(cache_dir, seed)


def get_site(name: str) -> Site:
    try:
        return SITES[name]
    except KeyError:
        raise ValueError(f"unknown site {name!r}; known: {', '.join(SITES)}") from None


# --------------------------------------------------------------------------- building


def site_task(site: Site, t1: Path, task: str = brain_patches.DEFAULT_TASK) -> Any:
    """The brain_patches task with this site's T1 (an absolute path) and subject id."""
    spec = brain_patches.get_task(task)
    return dataclasses.replace(spec, name=f"{spec.name}@{site.name}", t1=str(t1), subject=site.subject)


def build_site(name: str, out_dir: Path, *, train_per_class: int = 40, test_per_class: int = 20,
               val_per_class: int | None = None, seed: int = 0, fmt: str = "nifti",
               task: str = brain_patches.DEFAULT_TASK, drop_classes: tuple[str, ...] = (),
               overwrite: bool = False) -> Path:
    """Cut one site's patches and write them as a NIfTI or DICOM tree; returns the manifest.

    Each site samples its own patch centres (seed + site index), so no two sites share a patch.
    ``drop_classes`` leaves classes out of this site (a site that has no such patients).
    """
    site = get_site(name)
    t1 = site_t1(site, Path(out_dir).parent / "_templates", seed)
    spec = site_task(site, t1, task)
    patches = brain_patches.build_patches(
        spec, train_per_class=train_per_class, test_per_class=test_per_class, val_per_class=val_per_class,
        seed=seed + list(SITES).index(name) * 1000,
    )
    if drop_classes:
        unknown = sorted(set(drop_classes) - set(patches.class_names))
        if unknown:
            raise ValueError(f"drop_classes: unknown class(es) {', '.join(unknown)}")
        keep = ~np.isin(np.array(patches.class_names)[patches.labels], list(drop_classes))
        patches = _select(patches, keep)
    writer = brain_patches.write_nifti_tree if fmt == "nifti" else brain_patches.write_dicom_tree
    return writer(patches, Path(out_dir) / fmt, overwrite=overwrite)


def _select(patches: Any, keep: np.ndarray) -> Any:
    """A PatchSet with only the patches where ``keep`` (class names stay, so file names too)."""
    return dataclasses.replace(
        patches, images=patches.images[keep], labels=patches.labels[keep], split=patches.split[keep],
        hemisphere=patches.hemisphere[keep], centres=patches.centres[keep], slice_index=patches.slice_index[keep],
    )


def ingest_sites(manifests: dict[str, Path], out_dir: Path, *, settings: dict[str, Any] | None = None,
                 seed: int = 0, overwrite: bool = True) -> dict[str, dict[str, Any]]:
    """Ingest every site's tree: the first with ``settings``, the others with ``--protocol`` =
    the first site's file. Returns each site's ingest summary (``output`` is its .h5)."""
    from medcondense.config import IngestConfig
    from medcondense.errors import AlreadyDone
    from medcondense.ingest.pipeline import run

    settings = dict(PROTOCOL_SETTINGS if settings is None else settings)
    results: dict[str, dict[str, Any]] = {}
    first: Path | None = None
    for name, manifest in manifests.items():
        output = Path(out_dir) / f"{name}.h5"
        options: dict[str, Any] = {"protocol": str(first)} if first is not None else dict(settings)
        config = IngestConfig(inputs=[str(manifest.parent)], labels_csv=str(manifest), output=str(output),
                              site=name, seed=seed, overwrite=overwrite, **options)
        try:
            results[name] = run(config)
        except AlreadyDone as done:
            results[name] = {"skipped": True, **(done.result or {})}
        first = first or output
    return results


# --------------------------------------------------------------------------- CLI


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build several sites of the brain-patch task from different real brains (and, "
                    "optionally, a simulated scanner-shift site), ingested with one protocol.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sites:\n" + "\n".join(f"  {s.name:16s} {s.description}" for s in SITES.values()),
    )
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    parser.add_argument("--sites", default=",".join(DEFAULT_SITES),
                        help=f"comma list of sites, the first sets the protocol (default {','.join(DEFAULT_SITES)})")
    parser.add_argument("--shifted", action="store_true", help="add the simulated colin27_shifted site")
    parser.add_argument("--task", default=brain_patches.DEFAULT_TASK, help="brain_patches task (default aal10)")
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--format", choices=("nifti", "dicom"), default="nifti")
    parser.add_argument("--size", type=int, default=PROTOCOL_SETTINGS["size"], help="the protocol's image size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ingest", action="store_true", help="only write the file trees")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = [s.strip() for s in args.sites.split(",") if s.strip()]
    if args.shifted and "colin27_shifted" not in names:
        names.append("colin27_shifted")
    started = time.time()
    try:
        manifests = {
            name: build_site(name, args.out / name, train_per_class=args.train_per_class,
                             test_per_class=args.test_per_class, seed=args.seed, fmt=args.format,
                             task=args.task, overwrite=args.overwrite)
            for name in names
        }
    except (MissingSiteData, brain_patches.MissingTemplateError, ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {"sites": {n: {"manifest": str(m), "simulated": SITES[n].simulated,
                                             "description": SITES[n].description} for n, m in manifests.items()}}
    if not args.no_ingest:
        settings = {**PROTOCOL_SETTINGS, "size": args.size}
        for name, result in ingest_sites(manifests, args.out, settings=settings, seed=args.seed).items():
            summary["sites"][name].update(h5=result.get("output"), images=result.get("images"),
                                          content_hash=result.get("content_hash"))
    summary["seconds"] = round(time.time() - started, 1)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

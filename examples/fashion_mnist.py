#!/usr/bin/env python
"""Fashion-MNIST -> a medcondense HDF5 file: the control set with published distillation numbers.

Reads the MNIST idx files (gzip) that the Debian package ``dataset-fashion-mnist`` installs in
/usr/share/datasets/fashion-mnist/ and writes one medcondense file:

* images 28x28x1 scaled to [0, 1] (pixel / 255), kind "real", modality "OT", laterality false;
* train = the 60,000-image train file minus a seeded, class-stratified val slice of 5,000;
  test = the 10,000-image test file;
* normalization attributes with the train split's mean and std (what distillation standardizes
  with);
* ``--limit-train`` / ``--limit-test`` keep at most that many images *per class* (seeded) for quick
  runs; the val slice shrinks in proportion.

Usage::

    python examples/fashion_mnist.py -o fmnist.h5
    python examples/fashion_mnist.py -o fmnist_small.h5 --limit-train 100 --limit-test 50
"""

from __future__ import annotations

import argparse
import gzip
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger("medcondense.examples.fashion_mnist")

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
VAL_SIZE = 5000
TRAIN_SIZE = 60000

# idx type codes (third byte of the magic number) -> numpy big-endian dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxFormatError(ValueError):
    """A file is not in the MNIST idx format (or is truncated)."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an MNIST idx file (gzip-compressed or plain) into a numpy array.

    The format: two zero bytes, a type code byte, a byte with the number of dimensions, then one
    big-endian uint32 per dimension, then the data in C order.

    Parameters
    ----------
    path : an ``*-idx?-ubyte[.gz]`` file.

    Returns
    -------
    np.ndarray
        Shaped by the header, in the native byte order.

    Raises
    ------
    IdxFormatError
        Wrong magic number (not an idx file), unknown type code, or fewer bytes than the header
        promises.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise IdxFormatError(f"{path}: {len(raw)} bytes, too short for an idx header")
    zero1, zero2, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero1 != 0 or zero2 != 0:
        raise IdxFormatError(
            f"{path}: magic number {raw[:4].hex()} does not start with 0000; not an MNIST idx file "
            "(is it still gzipped, or another format?)"
        )
    if type_code not in IDX_DTYPES:
        raise IdxFormatError(f"{path}: unknown idx type code 0x{type_code:02x} in magic number {raw[:4].hex()}")
    header_end = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_end:
        raise IdxFormatError(f"{path}: header claims {ndim} dimensions but the file ends early")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header_end < expected:
        raise IdxFormatError(
            f"{path}: header shape {shape} needs {expected} bytes of data, found {len(raw) - header_end} (truncated?)"
        )
    data = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header_end).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def find_files(data_dir: Path) -> dict[str, Path]:
    """The four idx files in ``data_dir``; FileNotFoundError naming the Debian package otherwise."""
    paths = {key: data_dir / name for key, name in FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"missing {', '.join(missing)}; install the Debian package {DEBIAN_PACKAGE} or pass --data-dir"
        )
    return paths


def limit_per_class(labels: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices keeping at most ``limit`` random images per class (all when ``limit`` is None)."""
    if limit is None:
        return np.arange(len(labels))
    keep = [rng.permutation(np.flatnonzero(labels == c))[:limit] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def stratified_val(labels: np.ndarray, n_val: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask choosing ``n_val`` images for val, each class in proportion to its size."""
    mask = np.zeros(len(labels), dtype=bool)
    classes, counts = np.unique(labels, return_counts=True)
    per_class = np.floor(counts / counts.sum() * n_val).astype(int)
    # Hand the rounding remainder to the largest classes so the total is exactly n_val.
    for k in np.argsort(-counts)[: n_val - per_class.sum()]:
        per_class[k] += 1
    for c, n in zip(classes, per_class):
        mask[rng.permutation(np.flatnonzero(labels == c))[:n]] = True
    return mask


def build_image_set(
    data_dir: Path = DEFAULT_DIR,
    *,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
    out_path: Path | None = None,
    started: float | None = None,
) -> "object":
    """Read Fashion-MNIST and return a medcondense ``ImageSet`` (train / val / test as documented).

    Parameters
    ----------
    data_dir : folder of the four ``*-ubyte.gz`` files.
    limit_train, limit_test : at most this many images per class from the train / test file
        (the val slice is carved from what is kept, 1/12 of it, as 5,000 of 60,000).
    seed : seeds the limits and the val slice.
    out_path, started : recorded in the provenance.
    """
    from medcondense.provenance import make_provenance
    from medcondense.store import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VAL, ImageSet

    paths = find_files(Path(data_dir))
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or len(images) != len(labels):
            raise IdxFormatError(f"{part}: {images.shape} images do not match {labels.shape} labels")
    rng = np.random.default_rng(seed)
    train_idx = limit_per_class(arrays["train_labels"], limit_train, rng)
    test_idx = limit_per_class(arrays["test_labels"], limit_test, rng)
    train_labels = arrays["train_labels"][train_idx].astype(np.int64)
    n_val = round(len(train_idx) * VAL_SIZE / TRAIN_SIZE)
    is_val = stratified_val(train_labels, n_val, rng)

    images = np.concatenate([arrays["train_images"][train_idx], arrays["test_images"][test_idx]])
    images = (images.astype(np.float32) / 255.0)[:, None]
    labels = np.concatenate([train_labels, arrays["test_labels"][test_idx].astype(np.int64)])
    split = np.concatenate([
        np.where(is_val, SPLIT_VAL, SPLIT_TRAIN).astype(np.uint8),
        np.full(len(test_idx), SPLIT_TEST, dtype=np.uint8),
    ])
    train = images[split == SPLIT_TRAIN]
    normalization = {"method": "window", "window": [0, 255],
                     "train_mean": [float(train.mean())], "train_std": [float(train.std())]}
    source = np.array(
        [f"{FILES['train_images']}#{i}" for i in train_idx] + [f"{FILES['test_images']}#{i}" for i in test_idx],
        dtype=object,
    )
    n = len(labels)
    meta = {
        "source_path": source,
        "series_key": source.copy(),
        "patient_key": np.array([f"fmnist-{s}" for s in source], dtype=object),
        "slice_index": np.full(n, -1, dtype=np.int32),
        "site": np.array([""] * n, dtype=object),
        "spacing": np.ones((n, 3), dtype=np.float32),
    }
    config = {"limit_train": limit_train, "limit_test": limit_test, "val_size": n_val, "seed": seed}
    attrs = {
        "modality": "OT",
        "laterality": False,
        "normalization": normalization,
        "preprocessing": {"window": [0, 255], "spacing": None, "size": [28, 28], "normalization": normalization,
                          "source": "Fashion-MNIST idx files", "split_rule": "val: seeded stratified slice of train"},
        "provenance": make_provenance(
            stage="examples.fashion_mnist", config=config,
            paths=[Path(data_dir), *([out_path] if out_path else [])],
            seed=seed, device="cpu", started=started,
        ),
    }
    return ImageSet(images=images, labels=labels, split=split, class_names=list(CLASS_NAMES),
                    kind="real", meta=meta, attrs=attrs)


def make_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="fashion_mnist.py",
        description=(
            "Convert Fashion-MNIST (MNIST idx files) into a medcondense HDF5 file: 28x28x1 images in [0,1], "
            "train = 60k train file minus a seeded stratified val slice of 5k, test = the 10k test file."
        ),
        epilog=f"The idx files come from the Debian package {DEBIAN_PACKAGE} ({DEFAULT_DIR}).",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .h5 file")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR, help=f"folder of the idx files (default {DEFAULT_DIR})")
    parser.add_argument("--limit-train", type=int, default=None, help="keep at most N train-file images per class")
    parser.add_argument("--limit-test", type=int, default=None, help="keep at most N test images per class")
    parser.add_argument("--seed", type=int, default=0, help="seed of the limits and the val slice (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 usage error, 3 missing or unreadable input)."""
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    started = time.time()
    if args.output.exists() and not args.overwrite:
        # Checked before reading 70k images, not only by the writer.
        print(f"error: {args.output} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        image_set = build_image_set(args.data_dir, limit_train=args.limit_train, limit_test=args.limit_test,
                                    seed=args.seed, out_path=args.output, started=started)
    except (FileNotFoundError, IdxFormatError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    from medcondense.errors import ConfigError
    from medcondense.store import write

    try:
        digest = write(args.output, image_set, overwrite=args.overwrite)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = np.bincount(image_set.split, minlength=3)
    print(f"{args.output}: {image_set.n} images (train {counts[0]}, val {counts[1]}, test {counts[2]}), "
          f"10 classes, 28x28, content {digest[:12]}, {time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

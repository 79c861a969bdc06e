"""The medcondense HDF5 format: read, write (atomically), validate, hash.

docs/format.md is the contract; this module is its one implementation. Layout::

    /images   float32 [N, C, H, W]   chunked one image a chunk, gzip(1) + shuffle
    /labels   int64   [N]
    /split    uint8   [N]            0 train, 1 val, 2 test
    /meta/    one dataset per field, each of length N (see META_FIELDS)
    root attributes: schema, kind, class_names, modality, laterality, normalization,
                     preprocessing, provenance, content_hash (+ method, ipc, source_hash, ...)

Every stage calls :func:`read` (which calls :func:`validate`) on its inputs and :func:`write` on
its outputs. ``write`` goes to a private temporary beside the target and renames at the end
(:mod:`medcondense.atomic`), so an interrupted run never leaves a valid-looking file behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medcondense import interrupts
from medcondense.atomic import atomic_path
from medcondense.errors import ConfigError, RuntimeFailure, StoreError

SCHEMA_NAME = "medcondense"
# Files are written as schema 1 unless they use a feature a schema-1 reader would misread (see
# :func:`schema_for`); this version reads both. docs/format.md lists what schema 2 adds.
SCHEMA_VERSION = 2
SCHEMA = f"{SCHEMA_NAME}/1"
SCHEMA_V2 = f"{SCHEMA_NAME}/2"
#: expert trajectories for MTT (distill/experts.py): networks trained on real data, never an image set
EXPERTS_SCHEMA = "medcondense-experts/1"
KINDS = ("real", "synthetic", "subset", "mixed")
# Kinds and root attributes that only schema 2 knows. ``mixed`` (a merge of synthetic and real
# images, made only with ``merge --allow-mixed``) must count as real everywhere; a schema-1 reader
# would not know it. #8 (privacy) and #14 (factorised images) add their features here.
V2_KINDS = ("mixed",)
#: ``factorised``: each stored image holds factor**2 images (medcondense.factorised, #14/#17)
V2_ATTRS: tuple[str, ...] = ("dp", "factorised")
# Kinds that hold real patient images (DICOM export needs --allow-real, distill refuses mixed).
REAL_KINDS = ("real", "subset", "mixed")
SPLIT_TRAIN, SPLIT_VAL, SPLIT_TEST = 0, 1, 2
SPLIT_NAMES = {SPLIT_TRAIN: "train", SPLIT_VAL: "val", SPLIT_TEST: "test"}

# Per-image metadata: name -> (dtype, trailing shape). Strings are UTF-8.
META_FIELDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "source_path": ("str", ()),
    "series_key": ("str", ()),
    "patient_key": ("str", ()),
    "slice_index": ("int32", ()),
    "site": ("str", ()),
    "spacing": ("float32", (3,)),
}
# Fields a synthetic file must not carry: they would point back at patients.
IDENTIFYING_META = ("source_path", "series_key", "patient_key")

# Root attributes stored as plain strings; every other attribute is stored as JSON text.
PLAIN_ATTRS = ("schema", "kind", "modality", "method", "content_hash", "source_hash", "run_key")
# Attributes left out of the content hash: they describe the run, not the content.
UNHASHED_ATTRS = ("provenance", "content_hash", "run_key")


@dataclass
class ImageSet:
    """An image set in memory: what one medcondense HDF5 file holds.

    Parameters
    ----------
    images : float32 array [N, C, H, W]
    labels : int64 array [N], indices into ``class_names``
    split : uint8 array [N], 0 train / 1 val / 2 test
    class_names : names of the classes, index = label
    kind : ``"real"``, ``"synthetic"`` or ``"subset"`` (a coreset of real images)
    meta : per-image metadata, see :data:`META_FIELDS`
    attrs : the other root attributes (modality, laterality, normalization, preprocessing,
        provenance, method, ipc, ...); dicts and lists are fine, they are stored as JSON.
    """

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    class_names: list[str]
    kind: str = "real"
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def select(self, mask_or_index: np.ndarray) -> "ImageSet":
        """A new set with the chosen images (boolean mask or index array); attributes are copied."""
        idx = np.asarray(mask_or_index)
        return dataclasses.replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            split=self.split[idx],
            meta={k: v[idx] for k, v in self.meta.items()},
            attrs=dict(self.attrs),
        )

    def part(self, split: int) -> "ImageSet":
        """The images of one split (``SPLIT_TRAIN``, ``SPLIT_VAL`` or ``SPLIT_TEST``)."""
        return self.select(self.split == split)

    def normalization_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of the train split, as recorded at ingest (for standardizing)."""
        norm = self.attrs.get("normalization") or {}
        c = self.image_shape[0]
        mean = np.asarray(norm.get("train_mean", [0.0] * c), dtype=np.float32)
        std = np.asarray(norm.get("train_std", [1.0] * c), dtype=np.float32)
        std = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        return mean, std


# --------------------------------------------------------------------------- hashing


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def _bytes_view(a: np.ndarray) -> memoryview | bytes:
    """The bytes of a C-contiguous array without a copy (memoryview cannot cast empty arrays)."""
    return memoryview(a.reshape(-1).view(np.uint8)) if a.size else b""


def content_hash(image_set: ImageSet) -> str:
    """SHA-256 of the arrays and the canonical attributes (not of file bytes, not of provenance)."""
    images = np.ascontiguousarray(image_set.images)
    return _hash_parts(hashlib.sha256(), f"{images.dtype.str}{images.shape}", [images], image_set.labels,
                       image_set.split, image_set.meta, image_set.attrs, image_set.kind, image_set.class_names)


def _hash_parts(h: Any, images_header: str, image_chunks: Any, labels: np.ndarray, split: np.ndarray,
                meta: dict[str, np.ndarray], attrs: dict[str, Any], kind: str, class_names: list[str]) -> str:
    """The one definition of the content hash, fed whole arrays or image chunks (same bytes, same digest)."""
    h.update(images_header.encode())
    for chunk in image_chunks:
        h.update(_bytes_view(np.ascontiguousarray(chunk)))  # no copy: large sets hash in place
    for arr in (labels, split):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(_bytes_view(a))
    for name in sorted(meta):
        values = meta[name]
        h.update(name.encode())
        if values.dtype.kind in "OUS":
            h.update("\x00".join(str(v) for v in values.tolist()).encode("utf-8"))
        else:
            h.update(_bytes_view(np.ascontiguousarray(values)))
    attrs = {k: v for k, v in attrs.items() if k not in UNHASHED_ATTRS}
    attrs.update(kind=kind, class_names=list(class_names))
    h.update(_canonical_json(attrs).encode())
    return h.hexdigest()


def file_content_hash(path: str | Path, chunk: int = 512) -> tuple[str, str | None]:
    """(recomputed, stored) content hash of a file, reading ``chunk`` images at a time, so that a
    set larger than memory can be checked (what :func:`open_dataset` does once, in the parent).

    Raises
    ------
    StoreError
        Not a medcondense file, or inconsistent (as :func:`read`).
    """
    with _open(path) as f:
        attrs = _decode_attrs(f.attrs, path)
        _check_schema(attrs, path)
        _validate_open_file(f, attrs, path)
        images = f["images"]
        n = images.shape[0]
        header = f"{np.dtype(np.float32).str}{tuple(int(s) for s in images.shape)}"
        chunks = (images[i : i + chunk].astype(np.float32, copy=False) for i in range(0, n, chunk))
        meta = {name: _read_meta(ds) for name, ds in f["meta"].items()}
        class_names = list(attrs.pop("class_names"))
        kind = str(attrs.pop("kind"))
        attrs.pop("schema", None)
        digest = _hash_parts(hashlib.sha256(), header, chunks, f["labels"][()].astype(np.int64, copy=False),
                             f["split"][()].astype(np.uint8, copy=False), meta, attrs, kind, class_names)
    return digest, attrs.get("content_hash")


def hash_files(paths: list[Path], extra: Any = None) -> str:
    """SHA-256 over file contents (in the given order) and an optional JSON-able extra (a config)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.name).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    if extra is not None:
        h.update(_canonical_json(extra).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- writing


def schema_for(image_set: ImageSet) -> str:
    """``medcondense/2`` when the set uses a schema-2 feature (kind ``mixed``, a :data:`V2_ATTRS`
    attribute), else ``medcondense/1``, so files older readers understand stay readable by them."""
    if image_set.kind in V2_KINDS or any(name in image_set.attrs for name in V2_ATTRS):
        return SCHEMA_V2
    return SCHEMA


def _encode_attr(name: str, value: Any) -> Any:
    if name in PLAIN_ATTRS:
        return "" if value is None else str(value)
    return _canonical_json(value)


def _check_consistent(image_set: ImageSet, path: str | Path) -> None:
    """Raise StoreError if the arrays of an in-memory set do not fit together."""
    problems = _consistency_problems(
        images_shape=image_set.images.shape,
        labels=image_set.labels,
        split=image_set.split,
        meta_lengths={k: len(v) for k, v in image_set.meta.items()},
        class_names=image_set.class_names,
        kind=image_set.kind,
        meta_names=set(image_set.meta),
    )
    if problems:
        raise StoreError("refusing to write an inconsistent set: " + "; ".join(problems), path=path)


def canonical(image_set: ImageSet) -> ImageSet:
    """The same set with the stored dtypes (float32 images, int64 labels, uint8 split, meta as
    :data:`META_FIELDS`), so that its content hash equals the hash of the file read back."""
    meta = {}
    for name, values in image_set.meta.items():
        kind = META_FIELDS.get(name, ("str" if np.asarray(values).dtype.kind in "OUS" else None, ()))[0]
        if kind == "str":
            meta[name] = np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)
        elif kind is not None:
            meta[name] = np.asarray(values, dtype=kind)
        else:
            meta[name] = np.asarray(values)
    return dataclasses.replace(
        image_set,
        images=np.ascontiguousarray(image_set.images, dtype=np.float32),
        labels=np.asarray(image_set.labels, dtype=np.int64),
        split=np.asarray(image_set.split, dtype=np.uint8),
        meta=meta,
        class_names=[str(c) for c in image_set.class_names],
    )


def write(path: str | Path, image_set: ImageSet, *, overwrite: bool = False) -> str:
    """Write ``image_set`` to ``path`` atomically and return its content hash.

    The file is written to a private temporary (:func:`medcondense.atomic.atomic_path`) and
    renamed over ``path`` only when complete; on any error, Ctrl-C or SIGTERM the temporary is removed and the existing ``path`` (if any) is left untouched.

    Raises
    ------
    ConfigError
        ``path`` exists and ``overwrite`` is false.
    StoreError
        The set is inconsistent (shapes, labels, split codes, identifying meta in a synthetic set).
    """
    import h5py

    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError("output exists; pass --overwrite to replace it", path=path)
    image_set = canonical(image_set)
    _check_consistent(image_set, path)
    _check_finite(image_set, path)
    digest = content_hash(image_set)
    with interrupts.deferred():
        # h5py swallows an exception raised inside its own calls ("Exception ignored"), so a
        # signal is only recorded here and raised between chunks (interrupts.check)
        image = _file_image(image_set, digest)
    with atomic_path(path, expected_bytes=len(image)) as tmp:
        _write_bytes(tmp, image)
    return digest


def _check_finite(image_set: ImageSet, path: str | Path) -> None:
    """Never write a set holding NaN/Inf images: every later stage would refuse it."""
    bad = image_set.images.size - int(np.count_nonzero(np.isfinite(image_set.images)))
    if bad:
        raise RuntimeFailure(f"{bad} image value(s) are NaN or Inf; nothing written", path=path,
                             hint="a bug upstream: rerun with -v and report it")


def _file_image(image_set: ImageSet, digest: str) -> bytes:
    """The whole HDF5 file, built in memory.

    HDF5 crashes the interpreter (segfault at close) when the disk fills during a write, so the
    library never writes to disk: the file is built with the in-memory driver and written out
    with plain Python I/O, where a full disk is an ordinary OSError. The compressed image is
    never larger than the arrays already in memory.
    """
    import h5py

    f = h5py.File(f"medcondense-{id(image_set)}.h5", "w", driver="core", backing_store=False, track_order=True)
    try:
        _write_arrays(f, image_set)
        attrs = dict(image_set.attrs)
        attrs.update(
            schema=schema_for(image_set),
            kind=image_set.kind,
            class_names=list(image_set.class_names),
            content_hash=digest,
        )
        for name in sorted(attrs):
            f.attrs[name] = _encode_attr(name, attrs[name])
        f.flush()
        return f.id.get_file_image()
    finally:
        f.close()


def _write_bytes(path: Path, data: bytes, block: int = 8 << 20) -> None:
    """Write ``data`` to ``path`` in blocks, letting Ctrl-C/SIGTERM in between."""
    view = memoryview(data)
    with open(path, "wb") as out:
        for start in range(0, len(view), block):
            out.write(view[start:start + block])


#: deflate level of /images. Level 1, not 4: float images compress little past the shuffle (a
#: 500-image CT set: 1-3 % larger files) and level 4 took 30 % more CPU, the largest single cost
#: of a small ingest (docs/results.md, "Ingest against dcm2niix"). Readers do not depend on it.
GZIP_LEVEL = 1


def _write_arrays(f: Any, image_set: ImageSet) -> None:
    import h5py

    n = image_set.n
    chunk = (1, *image_set.images.shape[1:]) if n else None
    images = f.create_dataset(
        "images", shape=image_set.images.shape, dtype=np.float32, chunks=chunk, compression="gzip",
        compression_opts=GZIP_LEVEL, shuffle=True, track_times=False,
    )
    deflate = _fast_deflate()
    if deflate is not None and n:
        _write_chunks_direct(images, image_set.images, deflate)
    else:
        step = max(1, (8 << 20) // max(1, image_set.images[:1].nbytes))  # about 8 MB a block
        for start in range(0, n, step):
            interrupts.check()
            images[start:start + step] = image_set.images[start:start + step]
    f.create_dataset("labels", data=image_set.labels, track_times=False)
    f.create_dataset("split", data=image_set.split, track_times=False)
    meta = f.create_group("meta", track_order=True)
    str_type = h5py.string_dtype("utf-8")
    for name in sorted(image_set.meta):
        values = image_set.meta[name]
        kind, _ = META_FIELDS.get(name, ("str" if values.dtype.kind in "OUS" else values.dtype.str, ()))
        if kind == "str":
            data = np.array([str(v) for v in values.tolist()], dtype=object)
            meta.create_dataset(name, data=data, dtype=str_type, track_times=False)
        else:
            meta.create_dataset(name, data=np.asarray(values, dtype=kind), track_times=False)


def _fast_deflate() -> Callable[[bytes], bytes] | None:
    """ISA-L's zlib-format deflate at :data:`GZIP_LEVEL` (``isal``), or None when it is not installed.

    HDF5's own deflate (zlib) took 70-150 ms of CPU for the /images of a 500-image 64 px set, the
    largest single cost of a small ingest; ISA-L writes the same standard zlib stream 3-4x faster,
    as small or smaller. Without it, h5py's filter pipeline compresses (the same file content).
    """
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    return lambda data: isal_zlib.compress(data, GZIP_LEVEL)


def _write_chunks_direct(dataset: Any, images: np.ndarray, deflate: Callable[[bytes], bytes]) -> None:
    """Write ``images`` (one chunk per image) as HDF5's filter pipeline would: each chunk's bytes
    shuffled (HDF5's shuffle filter: byte 0 of every value, then byte 1, ...) and deflated in the
    zlib format that HDF5's deflate filter reads, stored with ``write_direct_chunk`` (filter mask 0:
    both filters applied). Readers see the same dataset as from ``dataset[...] = images``."""
    values = np.ascontiguousarray(images, dtype="<f4")  # the file's byte order, whatever the machine's
    itemsize = values.dtype.itemsize
    zeros = (0,) * (values.ndim - 1)
    for i, image in enumerate(values):
        if i % 256 == 0:
            interrupts.check()
        planes = image.reshape(-1).view(np.uint8).reshape(-1, itemsize).T
        dataset.id.write_direct_chunk((i, *zeros), deflate(np.ascontiguousarray(planes).tobytes()), 0)


# --------------------------------------------------------------------------- reading


def _open(path: str | Path) -> Any:
    import h5py

    path = Path(path)
    if not path.exists():
        raise StoreError("no such file", path=path)
    if path.is_dir():
        raise StoreError("is a folder, expected a medcondense .h5 file", path=path)
    try:
        return h5py.File(path, "r")
    except OSError:
        raise StoreError("not an HDF5 file (is it a medcondense .h5?)", path=path) from None


def _decode_attrs(raw: Any, path: str | Path) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if name in PLAIN_ATTRS or not isinstance(value, str):
            attrs[name] = value.item() if isinstance(value, np.generic) else value
            continue
        try:
            attrs[name] = json.loads(value)
        except json.JSONDecodeError:
            raise StoreError(f"attribute {name!r} is not valid JSON", path=path) from None
    return attrs


def _check_schema(attrs: dict[str, Any], path: str | Path) -> None:
    schema = attrs.get("schema")
    if schema == EXPERTS_SCHEMA:
        raise StoreError(
            "this is an MTT expert trajectory file (networks trained on the real data), not an image set; "
            "it stays with the real data and is never evaluated, exported or merged", path=path,
        )
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_NAME + "/"):
        raise StoreError("not a medcondense file (no 'schema' attribute); run `medcondense ingest` first", path=path)
    try:
        version = int(schema.split("/", 1)[1])
    except ValueError:
        raise StoreError(f"unreadable schema {schema!r}", path=path) from None
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"written by a newer medcondense (schema {schema}); this version reads up to {SCHEMA_V2}",
            path=path, hint="upgrade medcondense",
        )


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Root attributes of a medcondense file (decoded), plus ``n`` and ``image_shape``; loads no images."""
    with _open(path) as f:
        attrs = _decode_attrs(f.attrs, path)
        _check_schema(attrs, path)
        if "images" in f:
            attrs["n"] = int(f["images"].shape[0])
            attrs["image_shape"] = [int(s) for s in f["images"].shape[1:]]
    return attrs


def read(path: str | Path, *, validate_content: bool = True, verify_hash: bool = True) -> ImageSet:
    """Load a medcondense file into memory, validating it first.

    ``verify_hash`` (default: on, so every stage checks what it reads) recomputes the content
    hash and compares it with the stored one: altered pixels, labels or attributes are exit 3.
    A damaged chunk (h5py cannot decompress it) is exit 3 too.

    Raises
    ------
    StoreError
        Not an HDF5 file, not ours, a newer schema, or inconsistent (see :func:`validate`).
    """
    with _open(path) as f:
        attrs = _decode_attrs(f.attrs, path)
        _check_schema(attrs, path)
        _validate_open_file(f, attrs, path)
        try:
            images = f["images"][()].astype(np.float32, copy=False)
            labels = f["labels"][()].astype(np.int64, copy=False)
            split = f["split"][()].astype(np.uint8, copy=False)
            meta = {name: _read_meta(ds) for name, ds in f["meta"].items()}
        except (OSError, RuntimeError, UnicodeDecodeError) as exc:  # h5py: a chunk that does not decompress
            raise StoreError(f"damaged: a part of the file cannot be read ({type(exc).__name__}); "
                             "copy it again from its source", path=path) from None
    if validate_content and images.size and not np.isfinite(images).all():
        raise StoreError("images contain NaN or Inf values", path=path)
    class_names = list(attrs.pop("class_names"))
    kind = str(attrs.pop("kind"))
    attrs.pop("schema", None)
    image_set = ImageSet(
        images=images, labels=labels, split=split, class_names=class_names,
        kind=kind, meta=meta, attrs=attrs,
    )
    stored = attrs.get("content_hash")
    if verify_hash and stored and stored != content_hash(image_set):
        raise StoreError("content hash does not match the content: the file was altered or damaged", path=path)
    return image_set


def _read_meta(ds: Any) -> np.ndarray:
    """One meta dataset; strings decoded to an object array of str."""
    values = ds[()]
    if ds.dtype.kind == "O" or h5_is_string(ds):
        values = np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values], dtype=object)
    return values


def h5_is_string(ds: Any) -> bool:
    import h5py

    return h5py.check_string_dtype(ds.dtype) is not None


# --------------------------------------------------------------------------- validation


def _consistency_problems(
    *,
    images_shape: tuple[int, ...],
    labels: np.ndarray,
    split: np.ndarray,
    meta_lengths: dict[str, int],
    class_names: Any,
    kind: Any,
    meta_names: set[str],
) -> list[str]:
    problems: list[str] = []
    if len(images_shape) != 4:
        problems.append(f"images must be [N, C, H, W], got shape {tuple(images_shape)}")
        return problems
    n = images_shape[0]
    if kind not in KINDS:
        problems.append(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        problems.append("class_names must be a list of strings")
        class_names = []
    elif len(set(class_names)) != len(class_names):
        problems.append("class_names has duplicates")
    if labels.shape != (n,):
        problems.append(f"labels: expected shape ({n},), got {labels.shape}")
    elif n and (labels.min() < 0 or labels.max() >= len(class_names)):
        problems.append(f"labels must lie in [0, {len(class_names)}), found {labels.min()}..{labels.max()}")
    if split.shape != (n,):
        problems.append(f"split: expected shape ({n},), got {split.shape}")
    elif n and not np.isin(split, list(SPLIT_NAMES)).all():
        problems.append("split holds codes other than 0 (train), 1 (val), 2 (test)")
    for name, length in meta_lengths.items():
        if length != n:
            problems.append(f"meta/{name}: expected {n} rows, got {length}")
    if kind == "synthetic":
        leaked = sorted(meta_names & set(IDENTIFYING_META))
        if leaked:
            problems.append(f"a synthetic set must not carry per-image {', '.join(leaked)}")
    return problems


def _validate_open_file(f: Any, attrs: dict[str, Any], path: str | Path) -> None:
    missing = [name for name in ("images", "labels", "split", "meta") if name not in f]
    if missing:
        raise StoreError(f"missing {', '.join(missing)}; the file is damaged or not ours", path=path)
    if "class_names" not in attrs or "kind" not in attrs:
        raise StoreError("missing the class_names or kind attribute", path=path)
    problems = _consistency_problems(
        images_shape=f["images"].shape,
        labels=f["labels"][()],
        split=f["split"][()],
        meta_lengths={k: v.shape[0] for k, v in f["meta"].items()},
        class_names=attrs["class_names"],
        kind=attrs["kind"],
        meta_names=set(f["meta"].keys()),
    )
    if problems:
        raise StoreError("inconsistent file: " + "; ".join(problems), path=path)


def validate(path: str | Path) -> dict[str, Any]:
    """Check that ``path`` is a readable, consistent medcondense file of a schema we know.

    Returns its decoded root attributes (as :func:`read_attrs`). Raises :class:`StoreError` with a
    one-line reason otherwise: not HDF5, not ours, a newer schema, inconsistent shapes or labels,
    NaN/Inf images, or a content hash that does not match the content.
    """
    read(path, verify_hash=True)
    return read_attrs(path)


def require_kind(image_set: ImageSet, allowed: tuple[str, ...], path: str | Path, why: str) -> None:
    """Raise a ConfigError if the set's kind is not one of ``allowed`` (``why`` ends the message)."""
    if image_set.kind not in allowed:
        raise ConfigError(f"is a {image_set.kind} set; {why}", path=path)

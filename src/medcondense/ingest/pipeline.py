"""``medcondense ingest``: discover (or list on a DICOMweb server) -> read -> group/sort -> select
slices -> resample -> window -> normalize -> labels -> split -> one HDF5 file (written atomically).

Memory stays at one volume: each file is decoded, resampled to the small output size at once
(in worker processes with ``--workers``), and only those small images are kept. Windowing runs
on the resampled values of one unit (a series or a multi-frame file) at a time.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from medcondense import interrupts, store
from medcondense.atomic import atomic_path
from medcondense.config import IngestConfig, config_to_dict, default_data_path
from medcondense.errors import ConfigError, NoUsableInputError
from medcondense.ingest import deid, dicom, labels, normalize, onepass, split
from medcondense.ingest import images as plain_images
from medcondense.ingest import window as win
from medcondense.ingest.discover import Candidate, Discovery, discover, is_url, mask_for
from medcondense.ingest.resample import resample_slice
from medcondense.runkey import file_digest, hdf5_record, skip_if_done

if TYPE_CHECKING:  # imported where their inputs are read: a DICOM folder loads none of them
    from medcondense.ingest import dicomweb
    from medcondense.ingest import protocol as proto
    from medcondense.ingest.nifti import NiftiVolume

log = logging.getLogger(__name__)

ON_ERROR = ("skip", "fail")
CHANNELS = ("grey", "keep")
# options that do not change the output, left out of the run key
_NOT_IN_KEY = ("overwrite", "workers", "on_error", "rejects", "output", "protocol", "cache")


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class Options:
    """Validated options, parsed once."""

    window: win.WindowSpec
    fractions: tuple[float, float, float]
    slices: tuple[str, int]


def parse_slices(text: str) -> tuple[str, int]:
    """``all`` | ``every:K`` | ``central:N`` -> (mode, number)."""
    mode, _, number = (text or "all").strip().lower().partition(":")
    if mode == "all" and not number:
        return "all", 0
    if mode in ("every", "central") and number.isdigit() and int(number) > 0:
        return mode, int(number)
    raise ConfigError(f"--slices {text!r}: expected all, every:K or central:N (K, N > 0)")


def select_slices(n: int, spec: tuple[str, int]) -> list[int]:
    """Indices of the slices of an ``n``-slice volume kept by ``spec``."""
    mode, k = spec
    if mode == "every":
        return list(range(0, n, k))
    if mode == "central" and k < n:
        start = (n - k) // 2
        return list(range(start, start + k))
    return list(range(n))


#: the largest --size: one 2048 px float32 image is 16 MB, and distillation works on small ones
MAX_SIZE = 2048


def available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def estimate_images(candidates: list[Candidate], config: IngestConfig) -> int:
    """A quick count of the images the inputs give: one per DICOM file, for each NIfTI its longest
    axis (header only; masks and --slices ignored, so it is an upper bound for NIfTI)."""
    count = 0
    for c in candidates:
        if c.kind != "nifti":
            count += 1
            continue
        try:
            import nibabel as nib

            shape = nib.load(c.path).shape  # header only; not reoriented, so the longest axis bounds it
        except Exception:  # noqa: BLE001 - the reader reports a bad file later
            continue
        if len(shape) >= 3:
            count += max(int(d) for d in shape[:3]) * (int(shape[3]) if len(shape) > 3 and config.channels != "keep" else 1)
    return count


def check_memory(candidates: list[Candidate], config: IngestConfig) -> None:
    """Refuse (exit 2) a --size whose output cannot fit in memory, before reading any pixel."""
    available = available_memory()
    if available is None:
        return
    images = estimate_images(candidates, config)
    channels = 3 if config.channels == "keep" else 1
    needed = images * channels * config.size * config.size * 4 * 3  # collected, stacked, normalized
    if needed > available:
        raise ConfigError(
            f"--size {config.size}: about {images} images would need about {needed / 1e9:.1f} GB of "
            f"memory, {available / 1e9:.1f} GB available",
            hint="use a smaller --size, --slices every:K or central:N, or fewer inputs",
        )


def check_options(config: IngestConfig) -> Options:
    """Validate the options that are not files; raise ConfigError with the option's name."""
    if config.size < 4:
        raise ConfigError(f"--size must be at least 4, got {config.size}")
    if config.size > MAX_SIZE:
        raise ConfigError(f"--size must be at most {MAX_SIZE} pixels, got {config.size}",
                          hint="distillation works on small images: 28 to 128 is usual")
    if config.spacing is not None and not (math.isfinite(config.spacing) and config.spacing > 0):
        raise ConfigError(f"--spacing must be a positive number of mm, got {config.spacing}")
    if config.axis not in (0, 1, 2):
        raise ConfigError(f"--axis must be 0, 1 or 2, got {config.axis}")
    if config.channels not in CHANNELS:
        raise ConfigError(f"unknown --channels {config.channels!r}; expected grey or keep")
    if config.on_error not in ON_ERROR:
        raise ConfigError(f"unknown --on-error {config.on_error!r}; expected skip or fail")
    if config.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {config.workers}")
    if config.input_format not in plain_images.INPUT_FORMATS:  # before the inputs are read: exit 2, not 3
        raise ConfigError(f"unknown --input-format {config.input_format!r}; expected {', '.join(plain_images.INPUT_FORMATS)}")
    lo, hi = (float(v) for v in config.percentiles)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi <= 100):
        raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {config.percentiles}")
    deid.check_label_tag(config.label_tag, allow_identifying=config.allow_identifying_label_tag)
    normalize.check_method(config.normalize)
    spec = win.parse_window(config.window)
    if spec.kind == "auto" and config.normalize == "ct":
        spec = win.WindowSpec("none", name="none (for --normalize ct)")
    if spec.kind == "none" and config.normalize == "window":
        log.warning("--window none with --normalize window stores unscaled modality values")
    return Options(spec, split.check_fractions(config.split), parse_slices(config.slices))


# ------------------------------------------------------------------------------ rejects


@dataclass
class Rejects:
    """Bad inputs: (path, reason). With ``fail`` the first one raises instead."""

    fail: bool = False
    items: list[tuple[str, str]] = field(default_factory=list)
    #: with --hash-paths: path -> keyed hash, so no patient-named path reaches the report
    hasher: Callable[[str], str] | None = None

    def add(self, path: str, reason: str) -> None:
        shown = self.hasher(str(path)) if self.hasher else str(path)
        if self.fail:
            raise NoUsableInputError(reason, path=shown, hint="--on-error skip rejects bad files and goes on")
        log.debug("rejected %s: %s", shown, reason)
        self.items.append((shown, reason))

    def write(self, path: Path) -> None:
        """The report as CSV (path, reason), written atomically."""
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "reason"])
            writer.writerows(self.items)


def path_hasher(inputs: list[str], secret: bytes) -> Callable[[str], str]:
    """The --hash-paths form of a path: the keyed hash of its path below its input folder,
    exactly as stored in ``meta/source_path``."""
    roots = [Path(r) for r in inputs]

    def hashed(path: str) -> str:
        root = next((r for r in roots if Path(path) == r or r in Path(path).parents), Path(path).parent)
        return deid.keyed_hash(deid.relative_source(path, root), "path", secret)

    return hashed


# ------------------------------------------------------------------------------ collected images


@dataclass
class Collected:
    """The small output images and their per-image facts, appended unit by unit."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    fixed_split: list[int | None] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    slice_index: list[int] = field(default_factory=list)
    spacing: list[tuple[float, float, float]] = field(default_factory=list)
    modalities: Counter = field(default_factory=Counter)
    units: int = 0

    def add(self, image: np.ndarray, *, label: str, patient: str, fixed: int | None, site: str,
            source: str, series: str, index: int, spacing: tuple[float, float, float]) -> None:
        self.images.append(image)
        self.labels.append(label)
        self.patients.append(patient)
        self.fixed_split.append(fixed)
        self.sites.append(site)
        self.sources.append(source)
        self.series.append(series)
        self.slice_index.append(index)
        self.spacing.append(spacing)


@dataclass
class Context:
    """What every step needs: config, options, secret, manifest, rejects, pool, collected."""

    config: IngestConfig
    options: Options
    secret: bytes
    manifest: dict[Path, labels.ManifestRow] | labels.KeyedSheet | None
    rejects: Rejects
    mapper: Callable[..., Iterable[Any]]
    out: Collected = field(default_factory=Collected)
    root_warned: set[str] = field(default_factory=set)
    anonymous: int = 0
    windows: Counter = field(default_factory=Counter)
    burned_in: int = 0  # kept images whose file says BurnedInAnnotation/RecognizableVisualFeatures YES
    protocol: proto.Protocol | None = None
    decoded: dict[str, onepass.FileRead] = field(default_factory=dict)  # images read with the header
    class_order: list[str] | None = None  # class index order an input dictates (npz), else sorted names
    digests: dict[str, str] = field(default_factory=dict)  # path -> content digest of the file (run key)


# ------------------------------------------------------------------------------ workers


def dicom_task(args: tuple) -> tuple[list[np.ndarray], float] | str:
    """Worker: decode one DICOM file's frames and resample each to the output size.

    Returns ([C, size, size] float32 per frame in modality units, output spacing) or a reason.
    """
    from medcondense.ingest.nifti import fill_nonfinite

    path, frames, spacing, size, target, channels = args
    try:
        arr = dicom.read_frames(path, frames)
        filled = fill_nonfinite(np.asarray(arr, dtype=np.float32)) if np.asarray(arr).dtype.kind == "f" else (arr, 0)
        if isinstance(filled, str):
            return filled
        arr = filled[0]
        out, out_spacing = [], 1.0
        for frame in arr:
            planes = [resample_slice(p, spacing, size, target) for p in dicom.to_channels(frame, channels)]
            out_spacing = planes[0][1]
            out.append(np.stack([p[0] for p in planes]))
        return out, out_spacing
    except dicom.DecodeError as exc:
        return str(exc)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad file must become a reject, not a crash
        return f"cannot process the pixel data ({type(exc).__name__})"


def nifti_task(args: tuple) -> list[NiftiVolume] | str:
    """Worker: slice one NIfTI file (and its optional mask) into small resampled images."""
    from medcondense.ingest.nifti import NiftiVolume, fill_nonfinite, load_canonical, mask_slices, plane_spacing, take_slice

    path, mask_path, axis, slices, size, target, channels = args
    try:
        img = load_canonical(path)
        if len(img.shape) < 3 or len(img.shape) > 4:
            return f"expected a 3D or 4D NIfTI image, got shape {tuple(img.shape)}"
        data = np.asanyarray(img.dataobj, dtype=np.float32)
        filled = fill_nonfinite(data)
        if isinstance(filled, str):
            return filled
        data, nonfinite = filled
        if data.ndim == 3:
            data = data[..., None]
        keep = list(range(data.shape[axis]))
        if mask_path is not None:
            mask = load_canonical(str(mask_path))
            if tuple(mask.shape[:3]) != tuple(data.shape[:3]):
                return f"mask shape {tuple(mask.shape[:3])} differs from the image's {tuple(data.shape[:3])}"
            keep = mask_slices(np.asanyarray(mask.dataobj)[..., 0] if len(mask.shape) == 4 else np.asanyarray(mask.dataobj), axis)
        keep = [keep[i] for i in select_slices(len(keep), slices)]
        row, col, through = plane_spacing(img.header.get_zooms()[:3], axis)
        groups = [list(range(data.shape[3]))] if channels == "keep" else [[t] for t in range(data.shape[3])]
        volumes = []
        for vol_index, group in enumerate(groups):
            images, out_spacing = [], 1.0
            for s in keep:
                planes = [resample_slice(take_slice(data[..., t], axis, s), (row, col), size, target) for t in group]
                out_spacing = planes[0][1]
                images.append(np.stack([p[0] for p in planes]))
            stack = np.stack(images) if images else np.zeros((0, len(group), size, size), np.float32)
            volumes.append(NiftiVolume(stack, keep, (out_spacing, out_spacing, through), vol_index, nonfinite))
        return volumes
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        return f"unreadable NIfTI ({type(exc).__name__})"


@contextmanager
def mapper(workers: int) -> Iterator[Callable[..., Iterable[Any]]]:
    """``map`` in this process, or over a process pool for ``workers > 1``."""
    if workers <= 1:
        yield lambda fn, items, chunksize=1: map(fn, items)
        return
    from concurrent.futures import ProcessPoolExecutor  # only with --workers: 30 ms of start-up

    pool = ProcessPoolExecutor(max_workers=workers, initializer=interrupts.worker_init)
    try:
        yield lambda fn, items, chunksize=1: pool.map(fn, items, chunksize=max(1, chunksize))
    except BaseException:  # Ctrl-C, SIGTERM or an error: stop the workers, do not wait for queued files
        stop_pool(pool)
        raise
    pool.shutdown()


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel queued work and end the worker processes now (not after their current file)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    # (taken before shutdown(), which drops the pool's reference to its result queue)
    result_writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
    # A worker terminated half-way through sending its result leaves part of a message in the
    # result pipe; the pool's manager thread then waits in recv() for bytes that never come, and
    # Python's exit joins that thread forever (seen under load: SIGTERM, then no exit). The dead
    # workers' write ends closed with them; closing ours turns that wait into end-of-file, so the
    # manager thread marks the pool broken and ends.
    if result_writer is not None:
        result_writer.close()


# ------------------------------------------------------------------------------ steps


def file_facts(ctx: Context, path: str, root: str, tag_label: str | None,
               header: dicom.Header | None = None) -> tuple[str, labels.ManifestRow | None] | None:
    """Label (and manifest row) of one file by the precedence rules; None when rejected."""
    if isinstance(ctx.manifest, labels.KeyedSheet):
        if header is None:
            ctx.rejects.add(path, f"a NIfTI file has no {ctx.manifest.key} to match the labels CSV by")
            return None
        row, reason = ctx.manifest.match(header)
        if row is None:
            ctx.rejects.add(path, reason)  # type: ignore[arg-type]
            return None
        return row.label, row
    if ctx.manifest is not None:
        row = ctx.manifest.get(Path(path).resolve())
        if row is None:
            ctx.rejects.add(path, "not listed in the labels CSV")
            return None
        return row.label, row
    if tag_label is not None:
        return tag_label, None
    if is_url(root):  # no folders on a server to fall back on
        ctx.rejects.add(path, f"no {ctx.config.label_tag} value to take the label from")
        return None
    label, in_root = labels.folder_label(path, root)
    if in_root and root not in ctx.root_warned:
        ctx.root_warned.add(root)
        log.warning("files directly in an input folder form one class named after the folder (%r)", label)
    return label, None


def patient_of(ctx: Context, header: dicom.Header) -> str:
    """The raw patient identity: PatientID, else the study, else the series (warned once per run)."""
    if header.patient_id.upper() not in dicom.ANONYMOUS_IDS:
        return "pid:" + header.patient_id
    ctx.anonymous += 1
    if header.study_uid:
        return "study:" + header.study_uid
    return "series:" + (header.series_uid or header.path)


def source_of(ctx: Context, path: str, root: str) -> str:
    if is_url(root):  # a DICOMweb instance: its locator is UIDs, always hashed
        return deid.keyed_hash(path, "path", ctx.secret)
    rel = deid.relative_source(path, root)
    return deid.keyed_hash(rel, "path", ctx.secret) if ctx.config.hash_paths else rel


def window_unit(images: np.ndarray, ctx: Context, *, modality: str, voi, colour_bits: int | None,
                monochrome1: bool) -> np.ndarray:
    """Window one unit's stacked images ``[S, C, H, W]`` (percentiles over the whole unit)."""
    spec = win.resolve(ctx.options.window, modality=modality, voi=voi, colour_bits=colour_bits)
    ctx.windows[spec.name] += len(images)
    out = win.apply_window(images, spec, tuple(ctx.config.percentiles))
    return win.invert(out, spec) if monochrome1 else out


def ingest_dicom_unit(ctx: Context, unit: dicom.Unit) -> None:
    """Decode, resample, window and collect one DICOM unit."""
    cfg = ctx.config
    first = unit.headers[0]
    multiframe = first.frames > 1
    if multiframe:
        frames = select_slices(first.frames, ctx.options.slices)
        jobs = [(first, frames)]
        tasks = [(first.source or first.path, frames if len(frames) < first.frames else None, first.pixel_spacing,
                  cfg.size, cfg.spacing, cfg.channels)]
    else:
        keep = select_slices(len(unit.headers), ctx.options.slices) if unit.is_volume else range(len(unit.headers))
        jobs = [(unit.headers[i], [i if unit.is_volume else -1]) for i in keep]
        tasks = [(h.source or h.path, None, h.pixel_spacing, cfg.size, cfg.spacing, cfg.channels) for h, _ in jobs]
    facts = {h.path: file_facts(ctx, h.path, h.root, h.label, h) for h, _ in jobs}
    todo = [(t, h, idx) for t, (h, idx) in zip(tasks, jobs) if facts[h.path] is not None]
    if first.source is not None:  # DICOMweb: retrieved in bounded batches
        from medcondense.ingest import dicomweb

        results = dicomweb.batched(ctx.mapper, dicom_task, [t for t, _, _ in todo])
    else:
        results = decoded_or_decode(ctx, todo)
    images: list[np.ndarray] = []
    kept: list[tuple[dicom.Header, int, float]] = []
    for (_, h, idx), result in zip(todo, results):
        if isinstance(result, str):
            ctx.rejects.add(h.path, result)
            continue
        arrays, out_spacing = result
        for index, arr in zip(idx, arrays):
            images.append(arr)
            kept.append((h, index, out_spacing))
    if not images:
        return
    for w in unit.warnings:
        log.warning("series %s: %s", deid.keyed_hash(unit.series_uid, "series", ctx.secret), w)
    modality = cfg.modality or deid.safe_modality(first.modality)
    colour = first.bits_stored if first.samples > 1 else None
    stack = np.stack(images) if len({a.shape for a in images}) == 1 else None
    if unit.is_volume and stack is not None:
        windowed = list(window_unit(stack, ctx, modality=modality, voi=first.voi, colour_bits=colour,
                                    monochrome1=first.photometric == "MONOCHROME1"))
    else:
        windowed = [window_unit(a[None], ctx, modality=modality, voi=h.voi,
                                colour_bits=h.bits_stored if h.samples > 1 else None,
                                monochrome1=h.photometric == "MONOCHROME1")[0] for a, (h, _, _) in zip(images, kept)]
    series_key = deid.keyed_hash(unit.series_uid or first.path, "series", ctx.secret)
    for image, (h, index, out_spacing) in zip(windowed, kept):
        label, row = facts[h.path]  # type: ignore[misc]
        patient = ("csv:" + row.patient) if row is not None and row.patient else patient_of(ctx, h)
        ctx.out.add(
            image, label=label, patient=deid.keyed_hash(patient, "patient", ctx.secret),
            fixed=row.split if row is not None else None,
            site=(row.site if row is not None and row.site else None) or cfg.site or "",
            source=source_of(ctx, h.path, h.root), series=series_key, index=index,
            spacing=(out_spacing, out_spacing, float(unit.slice_spacing)),
        )
        ctx.out.modalities[modality] += 1
        ctx.burned_in += int(h.burned_in)
    ctx.out.units += 1


def decoded_or_decode(ctx: Context, todo: list[tuple[tuple, dicom.Header, list[int]]]) -> Iterator[Any]:
    """``dicom_task`` results in ``todo`` order: the images decoded with the header where the
    one-pass read made them, the others decoded now (in the pool)."""
    pending = [t for t, h, _ in todo if h.path not in ctx.decoded]
    computed = iter(ctx.mapper(dicom_task, pending, chunksize=max(1, len(pending) // (4 * ctx.config.workers))))
    for _, h, _ in todo:
        read = ctx.decoded.pop(h.path, None)
        if read is None:
            yield next(computed)
        else:
            yield read.error if read.error else (read.images, read.out_spacing)


def ingest_nifti(ctx: Context, candidates: list[Candidate]) -> None:
    """Slice, resample, window and collect NIfTI files (one file a task)."""
    cfg = ctx.config
    todo = []
    for c in candidates:
        facts = file_facts(ctx, c.path, c.root, None)
        if facts is None:
            continue
        mask = mask_for(c.path, cfg.mask_suffix) if cfg.mask_suffix else None
        if cfg.mask_suffix and mask is None:
            ctx.rejects.add(c.path, f"no mask named *{cfg.mask_suffix}.nii[.gz] beside it")
            continue
        todo.append((c, facts, (c.path, mask, cfg.axis, ctx.options.slices, cfg.size, cfg.spacing, cfg.channels)))
    modality = cfg.modality or "MR"
    for (c, (label, row), _), result in zip(todo, ctx.mapper(nifti_task, [t for *_, t in todo])):
        if isinstance(result, str):
            ctx.rejects.add(c.path, result)
            continue
        source = source_of(ctx, c.path, c.root)
        if result and result[0].nonfinite:
            log.warning("%s: %d NaN/Inf voxel(s) set to the volume's smallest finite value before resampling",
                        source, result[0].nonfinite)
        rel = deid.relative_source(c.path, c.root)
        patient = ("csv:" + row.patient) if row is not None and row.patient else "file:" + rel
        for vol in result:
            if not len(vol.images):
                continue
            windowed = window_unit(vol.images, ctx, modality=modality, voi=None, colour_bits=None, monochrome1=False)
            series_key = deid.keyed_hash(f"{Path(c.path).resolve()}#{vol.volume}", "series", ctx.secret)
            for image, index in zip(windowed, vol.slice_index):
                ctx.out.add(
                    image, label=label, patient=deid.keyed_hash(patient, "patient", ctx.secret),
                    fixed=row.split if row is not None else None,
                    site=(row.site if row is not None and row.site else None) or cfg.site or "",
                    source=source, series=series_key, index=index, spacing=vol.spacing,
                )
                ctx.out.modalities[modality] += 1
            ctx.out.units += 1


def read_dicom_headers(ctx: Context, candidates: list[Candidate]) -> list[dicom.Header]:
    """Headers of all DICOM candidates (in parallel with ``--workers``); rejects for bad ones.

    Each file is read once (:mod:`onepass`): with ``--slices all`` its single-frame image is
    decoded and shrunk in the same read (``ctx.decoded``), and its digest goes to the run key.
    """
    cfg = ctx.config
    decode = ctx.options.slices[0] == "all"
    args = [(c.path, c.root, cfg.label_tag, decode, cfg.size, cfg.spacing, cfg.channels, cfg.allow_burned_in)
            for c in candidates]
    headers = []
    for c, result in zip(candidates, onepass.read_all(args, ctx.mapper, cfg.workers)):
        if isinstance(result, tuple):
            reason, ctx.digests[c.path] = result
            ctx.rejects.add(c.path, reason)
            continue
        ctx.digests[c.path] = result.digest
        headers.append(result.header)
        if result.images is not None or result.error is not None:
            ctx.decoded[c.path] = result
    return headers


# ------------------------------------------------------------------------------ assembling


def stack_images(images: list[np.ndarray]) -> np.ndarray:
    """``[N, C, H, W]``, emptying ``images`` as it goes (one copy of the set in memory, not two);
    grey images are repeated when others have several channels (``keep``)."""
    channels = max(a.shape[0] for a in images)
    if any(a.shape[0] != channels for a in images):
        log.warning("mixing grey and %d-channel images: grey images are repeated to %d channels", channels, channels)
    out = np.empty((len(images), channels, *images[0].shape[1:]), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = image  # a 1-channel image broadcasts over the channels
        images[i] = None  # type: ignore[call-overload]
    images.clear()
    return out


def key_config(config: IngestConfig, protocol: proto.Protocol | None = None) -> dict[str, Any]:
    """The config fields that change the output (the run key's extra): the protocol by content,
    not by file name."""
    key = {k: v for k, v in config_to_dict(config).items() if k not in _NOT_IN_KEY}
    if protocol is not None:
        key["protocol"] = protocol.to_dict()
    return key


def _summary_from_attrs(output: Path, attrs: dict[str, Any]) -> dict[str, Any]:
    """What an up-to-date rerun reports (AlreadyDone), read from the existing output."""
    return {
        "output": str(output), "images": attrs.get("n"), "image_shape": attrs.get("image_shape"),
        "classes": attrs.get("class_names"), "content_hash": attrs.get("content_hash"),
    }


def protocol_classes(protocol: proto.Protocol, found: list[str]) -> list[str]:
    """The protocol's class names, in its order; ConfigError for a label it does not know."""
    unknown = sorted(set(found) - set(protocol.class_names))
    if unknown:
        raise ConfigError(
            f"class(es) {', '.join(map(repr, unknown))} are not in the protocol's classes "
            f"({', '.join(protocol.class_names)}); rename them or use another protocol",
            path=protocol.origin or None,
        )
    return list(protocol.class_names)


def warn_classes_without_train(class_names: list[str], y: np.ndarray, train: np.ndarray) -> None:
    """A protocol class with no train image here is kept (so files merge), with a warning."""
    counts = np.bincount(y[train], minlength=len(class_names))
    for name, count in zip(class_names, counts):
        if count == 0:
            log.warning("class %r has no train images at this site: kept (as the protocol says); "
                        "distill writes no images for it", name)


def list_remote(config: IngestConfig, urls: list[str], sheet, progress) -> dicomweb.Listing:
    """Check the DICOMweb inputs' options and list their instances (QIDO-RS)."""
    if isinstance(sheet, dict):
        raise ConfigError("a labels CSV keyed by path cannot label DICOMweb inputs; key it by study_uid, "
                          "series_uid, accession or patient_id", path=config.labels_csv)
    if sheet is None and not config.label_tag:
        raise ConfigError("DICOMweb inputs have no folders to take labels from: give --labels (keyed by "
                          "study_uid, series_uid, accession or patient_id) or --label-tag")
    if config.cache:
        log.warning("--cache keeps the retrieved DICOM files, with their patient data, in %s; "
                    "delete it when the data set is final", config.cache)
    from medcondense.ingest import dicomweb

    with progress("list studies", total=None) as bar:
        return dicomweb.list_instances(urls, studies=list(config.studies), query=config.query, sheet=sheet,
                                       advance=bar.advance)


def run_key_of(files: list[Path], digests: dict[str, str], extra: dict[str, Any]) -> str:
    """The run key: SHA-256 over each input file's name and content digest (BLAKE3,
    :func:`medcondense.runkey.content_digest`; in discovery order) and ``extra`` (the options that
    change the output, and a DICOMweb listing's digest). Digests the one-pass read made are
    reused; the other files (NIfTI, the CSV, or all of them for the no-op check) are hashed here."""
    import hashlib

    h = hashlib.sha256()
    for path in files:
        digest = digests.get(str(path))
        if digest is None:
            digest = file_digest(path)
        h.update(f"{path.name}\0{digest}\n".encode())
    h.update(store.hash_files([], extra).encode())
    return h.hexdigest()


def rejects_path(config: IngestConfig, output: Path) -> Path:
    return Path(config.rejects) if config.rejects else output.with_name(output.name + ".rejects.csv")


def run(config: IngestConfig) -> dict[str, Any]:
    """Ingest ``config.inputs`` into ``config.output``; return a JSON-able summary.

    Raises
    ------
    ConfigError
        Bad options, a labels CSV naming absent files, an existing output from other inputs.
    NoUsableInputError
        Nothing readable, everything rejected, or (``--on-error fail``) the first bad file.
    AlreadyDone
        The output exists and was made from identical inputs and options.
    """
    started = time.time()
    protocol = None
    if config.protocol:
        from medcondense.ingest import protocol as proto

        protocol = proto.load(config.protocol)
        config = proto.apply(config, protocol)
    options = check_options(config)
    if not config.inputs:
        raise NoUsableInputError("no input folders or files given")
    output = Path(config.output or default_data_path())
    csv_path = Path(config.labels_csv) if config.labels_csv else None
    if csv_path is not None and not csv_path.is_file():
        raise ConfigError("labels CSV not found", path=csv_path)
    urls = [i for i in config.inputs if is_url(i)]
    if urls:  # imported only for DICOMweb inputs
        from medcondense.ingest import dicomweb

        urls = [dicomweb.check_url(u) for u in urls]
    local = [i for i in config.inputs if not is_url(i)]
    if not urls and (config.studies or config.query or config.cache):
        raise ConfigError("--study, --query and --cache apply to DICOMweb inputs (http:// or https:// URLs)")
    manifest = labels.read_sheet(csv_path) if csv_path else None
    rejects = Rejects(fail=config.on_error == "fail",
                      hasher=path_hasher(local, deid.site_secret()) if config.hash_paths else None)
    found = discover(local, skip=[str(csv_path)] if csv_path else [], mask_suffix=config.mask_suffix) \
        if local else Discovery()
    if not found.candidates and not urls:
        where = ", ".join(config.inputs)
        why = f" ({found.rejects[0][1]})" if len(found.rejects) == 1 and not Path(found.rejects[0][0]).is_file() else ""
        raise NoUsableInputError(f"no readable DICOM or NIfTI files (nor PNG/JPEG/TIFF or MedMNIST npz) in {where}{why}")
    found.candidates = plain_images.choose_inputs(found.candidates, config.input_format)
    from medcondense.console import progress

    listing = list_remote(config, urls, manifest, progress) if urls else None
    for path, reason in found.rejects:
        rejects.add(path, reason)
    check_memory(found.candidates, config)
    files = [Path(c.path) for c in found.candidates] + ([csv_path] if csv_path else [])
    extra = key_config(config, protocol) | ({"dicomweb_listing": listing.digest()} if listing else {})
    if output.exists() and not config.overwrite:  # the no-op check needs the key before reading
        skip_if_done(output, run_key_of(files, {}, extra), config.overwrite, hdf5_record(_summary_from_attrs))

    with mapper(config.workers) as pool_map:
        ctx = Context(config, options, deid.site_secret(), manifest, rejects, pool_map, protocol=protocol)
        dicoms = [c for c in found.candidates if c.kind == "dicom"]
        niftis = [c for c in found.candidates if c.kind == "nifti"]
        pictures = [c for c in found.candidates if c.kind == "image"]
        arrays = [c for c in found.candidates if c.kind == "npz"]
        headers = read_dicom_headers(ctx, dicoms)
        if listing is not None:
            headers += dicomweb.read_headers(listing, label_tag=config.label_tag, cache=config.cache, reject=rejects.add,
                                             allow_burned_in=config.allow_burned_in)
        if isinstance(manifest, labels.KeyedSheet):
            manifest.check_matched(headers)
        units, size_rejects = dicom.group_units(headers)
        for path, reason in size_rejects:
            rejects.add(path, reason)
        with progress("ingest" if listing is None else "retrieve",
                      total=len(units) + (1 if niftis else 0) + (1 if pictures else 0) + len(arrays)) as bar:
            for unit in units:
                ingest_dicom_unit(ctx, unit)
                bar.advance()
                if listing is not None:
                    bar.update(status=f"{len(ctx.out.images)} images from {ctx.out.units} series")
            if niftis:
                ingest_nifti(ctx, niftis)
                bar.advance()
            if pictures:
                plain_images.ingest_images(ctx, pictures)
                bar.advance()
            if arrays:
                from medcondense.ingest import npz as npz_files

                for candidate in arrays:
                    ctx.class_order = npz_files.ingest_npz(ctx, candidate)
                    bar.advance()
        ctx.decoded.clear()
    run_key = run_key_of(files, ctx.digests, extra)
    if ctx.anonymous:
        log.warning("%d image(s) without a usable PatientID: grouped by study for the split", ctx.anonymous)
    report = rejects_path(config, output)
    if rejects.items:
        rejects.write(report)
        log.warning("%d input(s) rejected; see %s", len(rejects.items), report)
    if not ctx.out.images:
        raise NoUsableInputError(
            f"none of the inputs could be used ({len(rejects.items)} rejected)",
            hint=f"see {report}" if rejects.items else None,
        )
    return _finish(ctx, output, run_key, report, started)


def _finish(ctx: Context, output: Path, run_key: str, report: Path, started: float) -> dict[str, Any]:
    """Normalize, split and write the collected images; build the summary."""
    cfg, out = ctx.config, ctx.out
    images = stack_images(out.images)
    if ctx.protocol:
        class_names = protocol_classes(ctx.protocol, out.labels)
    elif ctx.class_order:
        class_names = list(ctx.class_order)
    else:
        class_names = sorted(labels.class_index(out.labels))
    index = {name: i for i, name in enumerate(class_names)}
    y = np.array([index[name] for name in out.labels], dtype=np.int64)
    codes = split.assign(out.patients, list(y), out.fixed_split, ctx.options.fractions, cfg.seed)
    train = codes == store.SPLIT_TRAIN
    pinned = ctx.protocol.pinned_params() if ctx.protocol else None
    if pinned is not None and cfg.normalize == ctx.protocol.normalization["method"]:
        params = pinned  # the source site's constants: every site lands in one intensity space
    else:
        params = normalize.fit(images, train, cfg.normalize, tuple(cfg.percentiles))
    if ctx.protocol:
        warn_classes_without_train(class_names, y, train)
    images = normalize.apply(images, cfg.normalize, params)
    modality = cfg.modality or (out.modalities.most_common(1)[0][0] if out.modalities else "OT")
    if len(out.modalities) > 1 and not cfg.modality:
        log.warning("several modalities (%s): recording %s", ", ".join(sorted(out.modalities)), modality)
    preprocessing = {
        "window": ctx.options.window.name, "windows_used": dict(sorted(ctx.windows.items())),
        "percentiles": list(cfg.percentiles), "spacing": cfg.spacing,
        "size": cfg.size, "normalization": cfg.normalize, "axis": cfg.axis, "slices": cfg.slices,
        "channels": cfg.channels, "resample": "SimpleITK linear, centred square pad, block-mean anti-alias",
    }
    paths = list(cfg.inputs) + [str(output)] + ([cfg.labels_csv] if cfg.labels_csv else []) \
        + ([cfg.cache] if cfg.cache else []) + ([cfg.protocol] if cfg.protocol else [])
    # study UIDs and query values identify patients' studies: placeholders, like paths
    identifiers = [(uid, f"<study{i}>") for i, uid in enumerate(cfg.studies, 1)]
    identifiers += [(cfg.query, "<query>")] if cfg.query else []
    from medcondense.provenance import make_provenance

    attrs = {
        "modality": modality, "laterality": bool(cfg.laterality),
        "normalization": normalize.normalization_attr(images, train, cfg.normalize, params),
        "preprocessing": preprocessing,
        "provenance": make_provenance(stage="ingest", config=config_to_dict(cfg), paths=paths,
                                      input_hash=run_key, seed=cfg.seed, started=started,
                                      identifiers=identifiers),
        "run_key": run_key,
        # how many images their file flags as showing text or a face (kept with --allow-burned-in);
        # copied into distilled sets, so every export can say BurnedInAnnotation YES
        "burned_in_images": int(ctx.burned_in),
    }
    if ctx.protocol:
        preprocessing["protocol"] = {"content_hash": ctx.protocol.source.get("content_hash"),
                                     "class_names": list(ctx.protocol.class_names)}
    site_names = sorted({s for s in out.sites if s})
    if site_names:
        attrs["sites"] = site_names
    meta = {
        "source_path": np.array(out.sources, dtype=object),
        "series_key": np.array(out.series, dtype=object),
        "patient_key": np.array(out.patients, dtype=object),
        "slice_index": np.array(out.slice_index, dtype=np.int32),
        "site": np.array(out.sites, dtype=object),
        "spacing": np.array(out.spacing, dtype=np.float32).reshape(-1, 3),
    }
    image_set = store.ImageSet(images=images, labels=y, split=codes, class_names=class_names,
                               kind="real", meta=meta, attrs=attrs)
    digest = store.write(output, image_set, overwrite=cfg.overwrite)
    result = {
        "output": str(output),
        "images": int(images.shape[0]),
        "image_shape": [int(s) for s in images.shape[1:]],
        "series": int(out.units),
        "patients": len(set(out.patients)),
        "modality": modality,
        "classes": {name: int((y == i).sum()) for i, name in enumerate(class_names)},
        "splits": {name: int((codes == code).sum()) for code, name in store.SPLIT_NAMES.items()},
        "rejects": len(ctx.rejects.items),
        "rejects_report": str(report) if ctx.rejects.items else None,
        "content_hash": digest,
        "seconds": round(time.time() - started, 2),
    }
    if ctx.rejects.items:
        result["exit_code"] = 4
    return result


def render(result: dict[str, Any], console: Any) -> None:
    """A summary table on stdout (rich)."""
    from rich.table import Table

    table = Table(title="medcondense ingest", show_header=False)
    table.add_column("what")
    table.add_column("value")
    if result.get("skipped"):
        table.add_row("status", "up to date (nothing to do)")
    table.add_row("output", str(result.get("output")))
    for key in ("images", "image_shape", "series", "patients", "modality"):
        if result.get(key) is not None:
            table.add_row(key, str(result[key]))
    classes = result.get("classes")
    if isinstance(classes, dict):
        table.add_row("classes", ", ".join(f"{k} {v}" for k, v in classes.items()))
    elif classes:
        table.add_row("classes", ", ".join(map(str, classes)))
    if result.get("splits"):
        table.add_row("splits", ", ".join(f"{k} {v}" for k, v in result["splits"].items()))
    if "rejects" in result:
        rejected = str(result["rejects"])
        if result.get("rejects_report"):
            rejected += f" (see {result['rejects_report']})"
        table.add_row("rejected", rejected)
    if result.get("content_hash"):
        table.add_row("content hash", str(result["content_hash"])[:16])
    console.print(table)

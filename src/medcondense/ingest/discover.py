"""Find the images under the input paths: DICOM by content, NIfTI by name, DICOMDIR-aware.

DICOM is recognised by its content (the ``DICM`` marker after the 128-byte preamble, or, for
preamble-less files, a forced pydicom read that finds Rows and Columns), never by extension.
A folder holding a ``DICOMDIR`` contributes exactly the files the DICOMDIR references. Hidden
files and folders are skipped. Links to folders are followed, each real folder read once.
PNG, JPEG and TIFF images and MedMNIST ``.npz`` files are recognised by their signatures
(:func:`medcondense.ingest.images.sniff`); which kinds are read is decided later
(``--input-format``). Anything else (unreadable folders, link loops, dangling links, fifos, names
that are not UTF-8) becomes a reject with its reason: nothing is dropped without a row.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOMDIR_NAME = "DICOMDIR"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
KINDS = ("dicom", "nifti", "image", "npz")
#: an input starting so names a DICOMweb server (medcondense.ingest.dicomweb), not a path
URL_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class Candidate:
    """One file to read: its path, the input root it was found under, and its kind: ``dicom``,
    ``nifti``, ``image`` (PNG/JPEG/TIFF) or ``npz``."""

    path: str
    root: str
    kind: str


@dataclass
class Discovery:
    """What :func:`discover` found: candidates in a stable order, and rejects (path, reason)."""

    candidates: list[Candidate] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)


def is_url(text: object) -> bool:
    """True for an input naming a DICOMweb root (``http://`` or ``https://``). Here rather than in
    :mod:`~medcondense.ingest.dicomweb`, so that ingesting local files does not import it."""
    return str(text).lower().startswith(URL_SCHEMES)


def is_nifti(path: Path) -> bool:
    """True for ``.nii`` / ``.nii.gz`` names."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def is_dicom(path: Path) -> bool:
    """True when ``path`` holds DICOM: the ``DICM`` marker, or a forced read finding Rows/Columns."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return "Rows" in ds and "Columns" in ds
    except Exception:  # noqa: BLE001 - any parse failure means "not DICOM"
        return False


def _hidden(name: str) -> bool:
    return name.startswith(".")


def printable(path: str | Path) -> str:
    """``path`` as text that can be written anywhere: bytes that are not UTF-8 become ``\\xNN``."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
        return False
    return True


def _os_reason(exc: OSError, what: str) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno == errno.ENOENT:
        return "dangling symbolic link (its target does not exist)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot read the {what} (permission denied)"
    return f"cannot read the {what} ({exc.strerror or type(exc).__name__})"


def file_problem(path: Path) -> str | None:
    """Why ``path`` (found in a folder) cannot be an image file, or None when it can be read.

    Links to files are followed; a loop, a dangling link, a fifo/socket/device and a name that
    is not UTF-8 are each a reason (a fifo would block the reader forever).
    """
    if not _utf8(path.name):
        return "file name is not valid UTF-8 (rename the file)"
    try:
        st = os.stat(path)
    except OSError as exc:
        return _os_reason(exc, "file")
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a fifo, socket or device)"
    return None


def dicomdir_files(dicomdir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files referenced by a DICOMDIR (resolved against its folder) and rejects for missing ones."""
    import pydicom

    files: list[Path] = []
    rejects: list[tuple[str, str]] = []
    try:
        ds = pydicom.dcmread(dicomdir, force=True)
    except Exception as exc:  # noqa: BLE001
        return [], [(str(dicomdir), f"unreadable DICOMDIR ({type(exc).__name__})")]
    for record in ds.get("DirectoryRecordSequence", []):
        ref = record.get("ReferencedFileID")
        if ref is None:
            continue
        parts = [ref] if isinstance(ref, str) else list(ref)
        path = dicomdir.parent.joinpath(*[str(p) for p in parts])
        if not path.exists():
            # ISO 9660 media are often copied with lower-case names
            alt = dicomdir.parent.joinpath(*[str(p).lower() for p in parts])
            path = alt if alt.exists() else path
        if path.exists():
            files.append(path)
        else:
            rejects.append((str(path), "referenced by the DICOMDIR but missing"))
    return files, rejects


def _walk(root: Path, skip: set[Path], rejects: list[tuple[str, str]]) -> list[Path]:
    """Regular, non-hidden files under ``root`` (sorted), honouring DICOMDIRs and ``skip``.

    Walking rules (docs/ingest.md): links to folders are followed, each real folder is read once
    (a link loop or a second link to a folder read already is a reject row); unreadable folders,
    names that are not UTF-8, dangling links, link loops and fifos/devices are reject rows.
    """
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()

    def unreadable(exc: OSError) -> None:
        rejects.append((printable(exc.filename or root), _os_reason(exc, "folder")))

    for folder, dirs, names in os.walk(root, onerror=unreadable, followlinks=True):
        here = Path(folder)
        try:
            st = os.stat(here)
        except OSError as exc:
            unreadable(exc)
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:
            rejects.append((printable(here), "folder already read through another path (a symbolic link loop or a second link to it); read once"))
            dirs[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        kept = []
        for d in sorted(dirs):
            if _hidden(d):
                continue
            if not _utf8(d):
                rejects.append((printable(here / d), "folder name is not valid UTF-8 (rename the folder)"))
                continue
            kept.append(d)
        dirs[:] = kept
        if DICOMDIR_NAME in names:
            refs, _ = dicomdir_files(here / DICOMDIR_NAME)
            found.extend(refs)
            found.append(here / DICOMDIR_NAME)  # marker, resolved by discover()
            dirs[:] = []
            continue
        for name in sorted(names):
            if _hidden(name):
                continue
            path = here / name
            problem = file_problem(path)
            if problem is not None:
                rejects.append((printable(path), problem))
                continue
            found.append(path)
    if not skip:  # resolving every path costs a stat per path component
        return found
    return [p for p in found if p.resolve() not in skip]


def sniff(path: Path) -> str | None:
    """``dicom`` (DICM marker), ``image`` or ``npz`` by the first bytes, else None."""
    from medcondense.ingest.images import sniff as sniff_file

    return sniff_file(path)


def classify(path: Path, root: Path, rejects: list[tuple[str, str]]) -> Candidate | None:
    """A Candidate for an image file, or None (with a reject unless it is ignorable)."""
    if is_nifti(path):
        return Candidate(str(path), str(root), "nifti")
    if not os.access(path, os.R_OK):
        rejects.append((str(path), "cannot read the file (permission denied)"))
        return None
    kind = sniff(path)  # by content, one read: the DICM marker, a PNG/JPEG/TIFF signature, an npz zip
    if kind is not None:
        return Candidate(str(path), str(root), kind)
    if is_dicom(path):  # preamble-less DICOM
        return Candidate(str(path), str(root), "dicom")
    rejects.append((str(path), "neither DICOM (no DICM marker, no image tags) nor NIfTI (.nii/.nii.gz)"))
    return None


def discover(inputs: list[str], *, skip: list[str] | None = None, mask_suffix: str | None = None) -> Discovery:
    """Walk ``inputs`` (folders or files) and classify every file.

    Parameters
    ----------
    inputs : folders or files given on the command line
    skip : files to ignore silently (the labels CSV when it sits among the images)
    mask_suffix : NIfTI masks (``<stem><suffix>.nii[.gz]``) are paired later, not images
    """
    result = Discovery()
    skip_set = {Path(s).resolve() for s in skip or []}
    seen: set[str] = set()
    real_folders: dict[str, str] = {}
    for raw in inputs:
        root = Path(raw)
        if not root.exists():
            reason = file_problem(root) if root.is_symlink() else None
            result.rejects.append((printable(raw), reason or "no such file or folder"))
            continue
        if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
            result.rejects.append((printable(raw), "cannot read the folder (permission denied)"))
            continue
        if not root.is_dir():
            problem = file_problem(root)
            if problem is not None:
                result.rejects.append((printable(raw), problem))
                continue
        paths = _walk(root, skip_set, result.rejects) if root.is_dir() else [root]
        for path in paths:
            if path.name == DICOMDIR_NAME:
                _, missing = dicomdir_files(path)
                result.rejects.extend(missing)
                continue
            resolved = _real_path(str(path), real_folders)
            if resolved in seen:
                continue
            seen.add(resolved)
            if mask_suffix and is_nifti(path) and _strip_nifti(path.name).endswith(mask_suffix):
                continue
            candidate = classify(path, root, result.rejects)
            if candidate is not None:
                result.candidates.append(candidate)
    log.info("found %d image files (%d DICOM, %d NIfTI, %d PNG/JPEG/TIFF, %d npz), %d rejected",
             len(result.candidates), *(sum(c.kind == k for c in result.candidates) for k in KINDS),
             len(result.rejects))
    return result


def _real_path(path: str, real_folders: dict[str, str]) -> str:
    """``os.path.realpath(path)`` (what ``Path.resolve`` returns), with the folder part resolved
    once per folder: a file that is not a symbolic link is its real folder plus its name, so
    one lstat replaces an lstat of every path component for each file."""
    if os.path.islink(path):
        return os.path.realpath(path)
    folder, name = os.path.split(path)
    real = real_folders.get(folder)
    if real is None:
        real = real_folders[folder] = os.path.realpath(folder or ".")
    return os.path.join(real, name)


def _strip_nifti(name: str) -> str:
    lower = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def mask_for(path: str | Path, suffix: str) -> Path | None:
    """The mask beside a NIfTI image (``a.nii.gz`` -> ``a<suffix>.nii.gz`` or ``.nii``), if present."""
    path = Path(path)
    stem = _strip_nifti(path.name)
    for ext in (".nii.gz", ".nii"):
        candidate = path.with_name(stem + suffix + ext)
        if candidate.exists():
            return candidate
    return None

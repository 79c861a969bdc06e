"""The judge and the sets it judges: read, check and standardize HDF5 sets for evaluation.

:func:`load_real` reads the real file (kind ``real``, a train and a test split, optionally the
test images of one ``--test-site``) and standardizes both splits with its train statistics;
:func:`load_input` reads a set to judge and standardizes it with the same statistics;
:func:`check_matches_real` is the shape and class-name check ``score`` shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medcondense import store
from medcondense.crosscheck import check_against_real
from medcondense.errors import ConfigError, DataMismatchError, ShapeMismatch
from medcondense.train import standardize


@dataclass
class RealData:
    """The judge: the real file's standardized train split and (site-filtered) test split."""

    path: str
    image_set: store.ImageSet
    content_hash: str
    mean: np.ndarray
    std: np.ndarray
    train_x: torch.Tensor
    train_y: np.ndarray
    test_x: torch.Tensor
    test_y: np.ndarray

    @property
    def class_names(self) -> list[str]:
        return self.image_set.class_names


def _known_sites(image_set: store.ImageSet) -> list[str]:
    sites = image_set.meta.get("site")
    return [] if sites is None else sorted({str(s) for s in sites if str(s)})


def _test_mask(image_set: store.ImageSet, test_site: str | None, path: str) -> np.ndarray:
    mask = image_set.split == store.SPLIT_TEST
    if test_site is None:
        return mask
    known = _known_sites(image_set)
    if not known:
        raise ConfigError(f"--test-site {test_site!r}: the file records no site for its images", path=path)
    if test_site not in known:
        raise ConfigError(f"--test-site {test_site!r}: unknown site; known sites: {', '.join(known)}", path=path)
    mask = mask & (image_set.meta["site"].astype(str) == test_site)
    if not mask.any():
        raise DataMismatchError(f"--test-site {test_site!r}: the test split has no image from this site", path=path)
    return mask


def load_real(path: str | Path, test_site: str | None = None) -> RealData:
    """Read and check the real file: kind ``real``, a test split, a known ``test_site``."""
    path = str(path)
    image_set = store.read(path)
    if image_set.kind != "real":
        raise DataMismatchError(
            f"is a {image_set.kind} set; --real needs the real data set (kind real) whose test split judges",
            path=path,
        )
    if not (image_set.split == store.SPLIT_TEST).any():
        raise DataMismatchError("has no test split to evaluate on (re-ingest with a test fraction > 0)", path=path)
    train_mask = image_set.split == store.SPLIT_TRAIN
    if not train_mask.any():
        raise DataMismatchError("has no train split (needed for the statistics and the baselines)", path=path)
    test_mask = _test_mask(image_set, test_site, path)
    mean, std = image_set.normalization_stats()
    return RealData(
        path=path,
        image_set=image_set,
        content_hash=image_set.attrs.get("content_hash") or store.content_hash(image_set),
        mean=mean,
        std=std,
        train_x=standardize(image_set.images[train_mask], mean, std),
        train_y=image_set.labels[train_mask],
        test_x=standardize(image_set.images[test_mask], mean, std),
        test_y=image_set.labels[test_mask],
    )


@dataclass
class InputSet:
    """One set to judge, standardized with the real statistics."""

    path: str
    kind: str
    method: str
    ipc: int
    content_hash: str
    train_x: torch.Tensor
    train_y: np.ndarray
    #: the student step size an MTT set learned (its ``learned_lr`` attribute); None for others
    learned_lr: float | None = None


def _images_per_class(labels: np.ndarray) -> int:
    return int(np.bincount(labels).max()) if labels.size else 0


def check_matches_real(image_set: store.ImageSet, real: store.ImageSet, path: str | Path, *,
                       real_path: str | Path = "the real set", allow_mismatch: bool = False,
                       source_must_match: bool = False) -> None:
    """Raise ShapeMismatch / DataMismatchError (exit 2, both files named) unless ``image_set``
    fits the real set: image shape, class names, intensity space, and (a warning, or an error
    with ``source_must_match``) the set it was made from. See :mod:`medcondense.crosscheck`."""
    if image_set.image_shape != real.image_shape:
        raise ShapeMismatch(
            f"images (C, H, W) differ from {Path(real_path).name}'s", expected=real.image_shape,
            got=image_set.image_shape, path=path,
        )
    check_against_real(image_set, path, real, real_path, allow_mismatch=allow_mismatch,
                       source_must_match=source_must_match)


def load_input(path: str | Path, real: RealData, *, allow_mismatch: bool = False) -> InputSet:
    """Read a set to judge and check it fits the real file (image shape, class names).

    Synthetic and subset files are used whole (a factorised file decoded: the images a user
    trains on; ``ipc`` stays the stored count); a real file contributes its train split.
    """
    from medcondense.factorised import decoded

    path = str(path)
    image_set = decoded(store.read(path))
    check_matches_real(image_set, real.image_set, path, real_path=real.path, allow_mismatch=allow_mismatch)
    if image_set.kind == "real":
        image_set = image_set.part(store.SPLIT_TRAIN)
    if image_set.n == 0:
        raise DataMismatchError("has no images to train on", path=path)
    ipc = image_set.attrs.get("ipc")
    return InputSet(
        path=path,
        kind=image_set.kind,
        method=str(image_set.attrs.get("method") or image_set.kind),
        ipc=int(ipc) if ipc else _images_per_class(image_set.labels),
        content_hash=image_set.attrs.get("content_hash") or store.content_hash(image_set),
        train_x=standardize(image_set.images, real.mean, real.std),
        train_y=image_set.labels,
        learned_lr=learned_lr_of(image_set.attrs.get("learned_lr")),
    )


def learned_lr_of(value: object) -> float | None:
    """A usable learned step size (a positive finite number), else None."""
    try:
        lr = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return lr if 0 < lr < float("inf") else None

"""Our HDF5 files as a ``torch.utils.data.Dataset``, for your own training code.

    from medcondense import open_dataset
    from torch.utils.data import DataLoader

    train = open_dataset("syn_dsa_ipc10.h5", split="train")
    loader = DataLoader(train, batch_size=64, shuffle=True, num_workers=2)
    for images, labels in loader:   # float32 [B, C, H, W], int64 [B]
        ...

The file's content hash is checked once, when the dataset is opened (streaming, so a set larger
than memory is fine); images are then read one by one, each DataLoader worker opening the file
itself (an h5py handle must not cross a fork).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from medcondense import store
from medcondense.errors import ConfigError, StoreError

SPLITS = {"train": store.SPLIT_TRAIN, "val": store.SPLIT_VAL, "test": store.SPLIT_TEST}


class MedcondenseDataset(Dataset):
    """(image, label) pairs of one split of a medcondense file.

    Attributes
    ----------
    class_names : class index -> name
    kind : ``real``, ``synthetic`` or ``subset``
    attrs : the file's root attributes (modality, normalization, preprocessing, method, ...)
    labels : int64 labels of the chosen images, in order (for samplers and class weights)
    """

    def __init__(self, path: str | Path, split: str | None = "train", transform: Callable | None = None,
                 standardize: bool = False, verify: bool = True) -> None:
        self.path = str(path)
        self.transform = transform
        attrs = store.read_attrs(self.path)
        if verify:
            digest, stored = store.file_content_hash(self.path)
            if stored and digest != stored:
                raise StoreError("content hash does not match the content: the file was altered or damaged",
                                 path=self.path)
        self.class_names: list[str] = list(attrs.pop("class_names"))
        self.kind: str = str(attrs.pop("kind"))
        attrs.pop("schema", None)
        self.attrs: dict[str, Any] = attrs
        import h5py

        with h5py.File(self.path, "r") as f:
            labels = f["labels"][()].astype(np.int64)
            codes = f["split"][()]
        if split in (None, "all"):
            self.indices = np.arange(len(labels))
        elif split in SPLITS:
            self.indices = np.flatnonzero(codes == SPLITS[split])
        else:
            raise ConfigError(f"unknown split {split!r}; expected train, val, test or all")
        self.split = split or "all"
        self.labels = labels[self.indices]
        self._standardize = None
        if standardize:
            c = int(attrs["image_shape"][0])
            norm = attrs.get("normalization") or {}
            mean = np.asarray(norm.get("train_mean", [0.0] * c), dtype=np.float32).reshape(c, 1, 1)
            std = np.asarray(norm.get("train_std", [1.0] * c), dtype=np.float32).reshape(c, 1, 1)
            self._standardize = (torch.from_numpy(mean), torch.from_numpy(np.where(std > 1e-8, std, 1.0).astype(np.float32)))
        self._file: Any = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return int(len(self.indices))

    def _images(self) -> Any:
        """The ``images`` dataset, opened in this process (again after a fork)."""
        if self._file is None or self._pid != os.getpid():
            import h5py

            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file["images"]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        row = int(self.indices[index])
        image = torch.from_numpy(np.asarray(self._images()[row], dtype=np.float32))
        if self._standardize is not None:
            mean, std = self._standardize
            image = (image - mean) / std
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None  # each worker opens its own handle
        return state

    def __del__(self) -> None:
        if getattr(self, "_file", None) is not None and self._pid == os.getpid():
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass

    def __repr__(self) -> str:
        return (f"MedcondenseDataset({Path(self.path).name!r}, split={self.split!r}, {len(self)} images, "
                f"{len(self.class_names)} classes, kind={self.kind!r})")


def open_dataset(path: str | Path, split: str | None = "train", transform: Callable | None = None, *,
                 standardize: bool = False, verify: bool = True) -> MedcondenseDataset:
    """A ``torch.utils.data.Dataset`` of ``(image float32 [C, H, W], label int)`` over a medcondense file.

    Parameters
    ----------
    path : a medcondense HDF5 (from ingest or distill)
    split : ``train``, ``val``, ``test``, or ``all`` / None for every image
    transform : applied to each image tensor (e.g. torchvision transforms that take tensors)
    standardize : subtract the train mean and divide by the train std recorded at ingest (the
        statistics the distillation and evaluation networks used)
    verify : check the content hash once (streaming) before handing out images

    Raises
    ------
    StoreError
        Not a medcondense file, damaged, or altered (content hash mismatch).
    ConfigError
        An unknown split name.
    """
    return MedcondenseDataset(path, split, transform, standardize=standardize, verify=verify)

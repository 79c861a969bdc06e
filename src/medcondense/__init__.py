"""medcondense: distil folders of DICOM and NIfTI images into tiny training sets.

The stages (``ingest``, ``distill``, ``evaluate``, ``score``, ``export``) pass data through one
HDF5 format (see :mod:`medcondense.store` and docs/format.md). Heavy libraries (torch, SimpleITK,
pydicom) are imported inside the stages that need them, so ``import medcondense`` stays cheap:
``open_dataset`` (a torch Dataset over our files) is looked up lazily, and torch is imported
only when it is first used.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["open_dataset", "__version__"]


def __getattr__(name: str) -> Any:
    """Lazy attributes: ``open_dataset`` imports torch only when asked for."""
    if name == "open_dataset":
        from medcondense.dataset import open_dataset

        return open_dataset
    raise AttributeError(f"module 'medcondense' has no attribute {name!r}")

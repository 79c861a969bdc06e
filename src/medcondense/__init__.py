"""medcondense: distil folders of DICOM and NIfTI images into tiny training sets.

The stages (``ingest``, ``distill``, ``evaluate``, ``score``, ``export``) pass data through one
HDF5 format (see :mod:`medcondense.store` and docs/format.md). Heavy libraries (torch, SimpleITK,
pydicom) are imported inside the stages that need them, so ``import medcondense`` stays cheap.
"""

__version__ = "0.1.0"

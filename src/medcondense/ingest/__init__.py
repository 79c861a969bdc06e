"""``medcondense ingest``: folders of DICOM/NIfTI -> one windowed, resampled, normalized HDF5 set.

One module a concern: :mod:`discover` (find files by content), :mod:`dicom` and :mod:`nifti`
(read pixels), :mod:`window`, :mod:`resample`, :mod:`normalize`, :mod:`labels`, :mod:`split`,
:mod:`deid` (keyed hashes, no tag values copied) and :mod:`pipeline` (``run`` and ``render``).
"""

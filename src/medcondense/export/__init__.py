"""``medcondense export``: a set as PNG, NIfTI, DICOM Secondary Capture, MedMNIST npz, and a data card.

:mod:`pipeline` checks options and writes atomically; one module per format (:mod:`png`,
:mod:`nifti`, :mod:`dicom`, :mod:`npz`, :mod:`card`) each exposing ``FOLDER``, ``CHANNELS`` and
``export(ctx, root) -> FormatResult``; :mod:`intensity` undoes ingest's window and normalization;
:mod:`context` holds what they share. docs/export.md describes the outputs.
"""

#!/usr/bin/env python
"""Brain-region patch classification tasks built from a T1 template and an atlas.

Each task answers one question: *which anatomical region is this 2D axial patch of a T1 brain
image centred in?* Patches are cut from a template brain (Colin27 "ch2", its 0.5 mm version, or
the INIA19 macaque template) around voxels of an atlas, and the atlas labels are grouped into a
handful of anatomical classes.

Split rule (the point of the design: test pixels are never seen in training)
---------------------------------------------------------------------------
* **train** and **val** patches are centred in the **left** hemisphere (world x < 0, RAS/MNI);
  val is a random, disjoint set of left-hemisphere centres (it overlaps train spatially, so it is
  optimistic: report test numbers).
* **test** patches are centred in the **right** hemisphere (x > 0) and **mirrored** left-right,
  so that in every patch the columns run from lateral (column 0) to medial: a right-hemisphere
  patch looks like a left-hemisphere one.
* No patch holds a pixel from the other hemisphere. Two policies (``--midline``):
  ``mask`` (default) keeps every centre and fills the pixels at or beyond the midline (x >= 0 for
  a left patch, x <= 0 for a right one) with the background value; ``reject`` drops centres whose
  patch would cross x = 0. With 64 mm patches ``reject`` leaves no centre in midline structures
  (deep grey, cingulate, vermis), which is why ``mask`` is the default.
* The data come from one subject, so the manifests name the patient "ch2-left" for train,
  "ch2-left-val" for val and "ch2-right" for test: a patient-level split agrees with the
  hemisphere split (val needs its own id because ingest keeps each patient in one split).

Class groupings
---------------
``aal10`` (AAL, 116 regions -> 10 classes)
    cerebellum (Cerebelum_*, Vermis_*), deep_grey (caudate, putamen, pallidum, thalamus),
    frontal (superior/middle/inferior frontal gyri incl. opercular and triangular parts, superior
    medial frontal), insula_cingulate (insula, anterior/middle/posterior cingulum),
    limbic_mtl (hippocampus, parahippocampal gyrus, amygdala), occipital (calcarine, cuneus,
    lingual, superior/middle/inferior occipital), orbitofrontal (all *_Orb parts, gyrus rectus,
    olfactory), parietal (superior/inferior parietal, supramarginal, angular, precuneus),
    sensorimotor (pre/postcentral, paracentral lobule, supplementary motor area, Rolandic
    operculum), temporal (superior/middle/inferior temporal, temporal poles, Heschl, fusiform).
``aal_lobes4``
    frontal (frontal + orbitofrontal + precentral, SMA, paracentral, Rolandic), parietal
    (postcentral + parietal), temporal (temporal + fusiform + hippocampus, parahippocampal,
    amygdala), occipital. Cerebellum, deep grey, insula and cingulum are left out.
``aicha``
    AICHA's gyri (G_), sulci (S_) and nuclei (N_) through the same rules as ``aal10`` (plus the
    sulci: S_Precentral/S_Postcentral/S_Rolando -> sensorimotor, S_Intraparietal and
    S_Parietooccipital -> parietal, ...); AICHA has no cerebellum, so 9 classes.
``brodmann`` (Brodmann areas -> 8 classes)
    prefrontal (8-11, 44-47), motor_premotor (4, 6), somatosensory (1-3, 43), parietal (5, 7,
    39, 40), cingulate (23-26, 29-33), temporal (20-22, 38, 41, 42), occipital (17-19),
    ventral_medial_temporal (27, 28, 34-37, 48).
``jhu_tracts`` (JHU white-matter labels, 48 tracts -> 7 families)
    association (sagittal stratum, external capsule, SLF, superior fronto-occipital, uncinate),
    commissural (corpus callosum), brainstem (cerebellar peduncles, pontine crossing tract,
    medial lemniscus, corticospinal tract, cerebral peduncle), internal_capsule, corona_radiata,
    limbic (fornix, cingulum, stria terminalis), posterior_radiation (posterior thalamic
    radiation, tapetum).
``harvardoxford`` (Harvard-Oxford cortical, 48 regions -> 7 classes)
    frontal, sensorimotor (pre/postcentral, juxtapositional/SMA, central operculum), parietal,
    temporal (lateral temporal, planum polare/temporale, Heschl), occipital, ventral_temporal
    (parahippocampal, temporal and temporal-occipital fusiform), cingulate_insula.
``inia19`` (INIA19 NeuroMaps, macaque, no label names shipped)
    NeuroMaps numbers a left structure ``i`` and its right twin ``1000 + i``; the ids ``i`` present
    are sorted and cut into 8 contiguous blocks of equal size (``ids_<first>_<last>``, both
    hemispheres' ids in each); NeuroMaps numbers related structures with nearby ids.

Outputs (``--format``)
----------------------
``dicom``  OUT/dicom/<class>/patch_00001.dcm, one MR Image Storage file per patch, uint16 pixels
           with RescaleSlope/Intercept recovering the template's intensities, a clearly fake
           patient, one single-image series per patch; plus OUT/dicom/manifest.csv.
``nifti``  OUT/nifti/<class>/patch_00001.nii.gz, float32 (H, W, 1); plus OUT/nifti/manifest.csv.
``h5``     OUT/data.h5, a medcondense file (resized to the output size, window-normalized).
Manifests have the header ``path,label,patient,split`` with paths relative to the CSV.

Patches are written raw at ``patch_size`` pixels for dicom/nifti (resizing is ingest's job:
``medcondense ingest OUT/dicom --labels OUT/dicom/manifest.csv --size 32``; the manifest carries
the hemisphere split, which one DICOM PatientID cannot); only the h5 writer resizes.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import logging
import re
import shutil
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger("medcondense.examples.brain_patches")

EXAMPLES_DIR = Path(__file__).resolve().parent
SHIPPED_DIR = EXAMPLES_DIR / "data"
SYSTEM_DIR = Path("/usr/share/mricron/templates")
DEBIAN_PACKAGE = "mricron-data"

SPLITS = ("train", "val", "test")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
HEMISPHERE_OF_SPLIT = {"train": "left", "val": "left", "test": "right"}
MIDLINE_POLICIES = ("mask", "reject")
FORMATS = ("dicom", "nifti", "h5")
WINDOW_PERCENTILES = (0.5, 99.5)
MANIFEST_HEADER = ("path", "label", "patient", "split")
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

# A label table maps atlas ids to region names; a grouping maps class names to atlas ids.
LabelTable = dict[int, str]
Grouping = Callable[[LabelTable], dict[str, list[int]]]


class MissingTemplateError(FileNotFoundError):
    """A template or atlas file a task needs is not installed."""


# --------------------------------------------------------------------------- label tables


def read_label_table(path: Path) -> LabelTable:
    """Read an MRIcron label table (``index name [code]`` per line, spaces or tabs).

    Parameters
    ----------
    path : the ``.nii.txt`` file next to an atlas.

    Returns
    -------
    dict
        Atlas id -> region name; id 0 (background / "Unclassified") is left out.
    """
    table: LabelTable = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        label_id = int(parts[0])
        if label_id != 0:
            table[label_id] = parts[1]
    if not table:
        raise ValueError(f"{path}: no 'index name' lines found; is it an MRIcron label table?")
    return table


# Harvard-Oxford cortical atlas (FSL), label ids 1..48, as in FSL's HarvardOxford-Cortical.xml.
HARVARD_OXFORD_CORTICAL: tuple[str, ...] = (
    "Frontal_Pole", "Insular_Cortex", "Superior_Frontal_Gyrus", "Middle_Frontal_Gyrus",
    "Inferior_Frontal_Gyrus_pars_triangularis", "Inferior_Frontal_Gyrus_pars_opercularis",
    "Precentral_Gyrus", "Temporal_Pole", "Superior_Temporal_Gyrus_anterior",
    "Superior_Temporal_Gyrus_posterior", "Middle_Temporal_Gyrus_anterior",
    "Middle_Temporal_Gyrus_posterior", "Middle_Temporal_Gyrus_temporooccipital",
    "Inferior_Temporal_Gyrus_anterior", "Inferior_Temporal_Gyrus_posterior",
    "Inferior_Temporal_Gyrus_temporooccipital", "Postcentral_Gyrus", "Superior_Parietal_Lobule",
    "Supramarginal_Gyrus_anterior", "Supramarginal_Gyrus_posterior", "Angular_Gyrus",
    "Lateral_Occipital_Cortex_superior", "Lateral_Occipital_Cortex_inferior",
    "Intracalcarine_Cortex", "Frontal_Medial_Cortex", "Juxtapositional_Lobule_Cortex",
    "Subcallosal_Cortex", "Paracingulate_Gyrus", "Cingulate_Gyrus_anterior",
    "Cingulate_Gyrus_posterior", "Precuneous_Cortex", "Cuneal_Cortex", "Frontal_Orbital_Cortex",
    "Parahippocampal_Gyrus_anterior", "Parahippocampal_Gyrus_posterior", "Lingual_Gyrus",
    "Temporal_Fusiform_Cortex_anterior", "Temporal_Fusiform_Cortex_posterior",
    "Temporal_Occipital_Fusiform_Cortex", "Occipital_Fusiform_Gyrus", "Frontal_Operculum_Cortex",
    "Central_Opercular_Cortex", "Parietal_Operculum_Cortex", "Planum_Polare", "Heschls_Gyrus",
    "Planum_Temporale", "Supracalcarine_Cortex", "Occipital_Pole",
)


def harvard_oxford_table(_atlas_ids: np.ndarray) -> LabelTable:
    """The Harvard-Oxford cortical label names (the Debian file ships without a table)."""
    return {i + 1: name for i, name in enumerate(HARVARD_OXFORD_CORTICAL)}


def brodmann_table(atlas_ids: np.ndarray) -> LabelTable:
    """Brodmann atlas ids are the area numbers: name them ``BA<n>``."""
    return {int(i): f"BA{int(i)}" for i in atlas_ids if i != 0}


def numbered_table(atlas_ids: np.ndarray) -> LabelTable:
    """Names ``label_<id>`` for an atlas that ships no names."""
    return {int(i): f"label_{int(i)}" for i in atlas_ids if i != 0}


# --------------------------------------------------------------------------- groupings


def group_by_name(table: LabelTable, rules: Sequence[tuple[str, str]]) -> dict[str, list[int]]:
    """Group atlas ids by regular expressions on their names; the first matching rule wins.

    Parameters
    ----------
    table : atlas id -> region name.
    rules : ``(class_name, regex)`` pairs, tried in order, case-insensitively, on the name with
        any AICHA-style ``G_``/``S_``/``N_`` prefix removed. Names matching no rule are dropped.

    Returns
    -------
    dict
        Class name -> sorted atlas ids, classes in sorted order (ingest sorts class names too),
        without classes that matched nothing.
    """
    compiled = [(cls, re.compile(pattern, re.IGNORECASE)) for cls, pattern in rules]
    groups: dict[str, list[int]] = {}
    for label_id, name in sorted(table.items()):
        bare = re.sub(r"^[GSN]_", "", name)
        for cls, pattern in compiled:
            if pattern.search(bare):
                groups.setdefault(cls, []).append(label_id)
                break
        else:
            log.debug("label %d %s belongs to no class; not sampled", label_id, name)
    return {cls: groups[cls] for cls in sorted(groups)}


def group_by_id(table: LabelTable, groups: dict[str, Sequence[int]]) -> dict[str, list[int]]:
    """Group atlas ids by explicit id lists (ids absent from the atlas are ignored)."""
    present = set(table)
    out = {cls: sorted(set(ids) & present) for cls, ids in groups.items()}
    return {cls: out[cls] for cls in sorted(out) if out[cls]}


def group_by_id_blocks(table: LabelTable, k: int = 8) -> dict[str, list[int]]:
    """Cut the sorted atlas ids into ``k`` contiguous blocks of (nearly) equal size.

    For atlases that ship no names: atlases usually number related structures together, so blocks
    of neighbouring ids are a coarse but reproducible anatomical grouping.
    """
    ids = sorted(table)
    blocks = [b for b in np.array_split(np.asarray(ids), k) if len(b)]
    return {f"ids_{int(b[0]):04d}_{int(b[-1]):04d}": [int(i) for i in b] for b in blocks}


INIA19_RIGHT_OFFSET = 1000  # NeuroMaps: right-hemisphere id = left id + 1000

# Order matters: the first match wins (e.g. *_Orb before Frontal, sulci before gyri names).
AAL10_RULES: tuple[tuple[str, str], ...] = (
    ("orbitofrontal", r"_Orb|^Rectus|^Olfactory|^Orbital"),
    ("sensorimotor", r"^(Precentral|Postcentral|Paracentral|Supp_Motor|Rolandic|Rolando)"),
    ("frontal", r"^(Frontal|Sup_Frontal|Inf_Frontal)"),
    ("parietal", r"^(Parietal|SupraMarginal|Angular|Precuneus|Intraparietal|Parietooccipital)"),
    ("occipital", r"^(Calcarine|Cuneus|Lingual|Occipital|Intraoccipital)"),
    ("temporal", r"^(Temporal|Heschl|Fusiform|Sup_Temporal)"),
    ("limbic_mtl", r"^(Hippocampus|ParaHippocampal|Amygdala)"),
    ("insula_cingulate", r"^(Insula|Cingulum|Cingulate|Anterior_Rostral|subcallosal)"),
    ("deep_grey", r"^(Caudate|Putamen|Pallidum|Thalamus)"),
    ("cerebellum", r"^(Cerebelum|Vermis)"),
)

AAL_LOBES4_RULES: tuple[tuple[str, str], ...] = (
    ("frontal", r"^(Frontal|Rectus|Olfactory|Precentral|Supp_Motor|Paracentral|Rolandic)"),
    ("parietal", r"^(Postcentral|Parietal|SupraMarginal|Angular|Precuneus)"),
    ("temporal", r"^(Temporal|Heschl|Fusiform|Hippocampus|ParaHippocampal|Amygdala)"),
    ("occipital", r"^(Calcarine|Cuneus|Lingual|Occipital)"),
)

BRODMANN_GROUPS: dict[str, tuple[int, ...]] = {
    "prefrontal": (8, 9, 10, 11, 44, 45, 46, 47),
    "motor_premotor": (4, 6),
    "somatosensory": (1, 2, 3, 43),
    "parietal": (5, 7, 39, 40),
    "cingulate": (23, 24, 25, 26, 29, 30, 31, 32, 33),
    "temporal": (20, 21, 22, 38, 41, 42),
    "occipital": (17, 18, 19),
    "ventral_medial_temporal": (27, 28, 34, 35, 36, 37, 48),
}

# "fronto-occipital ... internal capsule" is an association tract: association comes first.
JHU_RULES: tuple[tuple[str, str], ...] = (
    ("association", r"Sagittal_stratum|External_capsule|longitudinal_fasciculus|fronto-occipital|Uncinate"),
    ("commissural", r"corpus_callosum"),
    ("brainstem", r"peduncle|Pontine|Medial_lemniscus|Corticospinal"),
    ("internal_capsule", r"internal_capsule"),
    ("corona_radiata", r"corona_radiata"),
    ("limbic", r"Fornix|Cingulum"),
    ("posterior_radiation", r"thalamic_radiation|Tapetum"),
)

HARVARD_OXFORD_RULES: tuple[tuple[str, str], ...] = (
    ("cingulate_insula", r"Insular|Subcallosal|cingulate"),
    ("sensorimotor", r"Precentral|Postcentral|Juxtapositional|Central_Opercular"),
    ("ventral_temporal", r"Parahippocampal|Fusiform"),
    ("frontal", r"Frontal"),
    ("parietal", r"Parietal|Supramarginal|Angular|Precuneous"),
    ("temporal", r"Temporal|Planum|Heschl"),
    ("occipital", r"Occipital|calcarine|Cuneal|Lingual"),
)


def aal10_grouping(table: LabelTable) -> dict[str, list[int]]:
    """AAL (or AICHA) regions -> 10 anatomical classes (see the module docstring)."""
    return group_by_name(table, AAL10_RULES)


def aal_lobes4_grouping(table: LabelTable) -> dict[str, list[int]]:
    """AAL regions -> the four cerebral lobes."""
    return group_by_name(table, AAL_LOBES4_RULES)


def brodmann_grouping(table: LabelTable) -> dict[str, list[int]]:
    """Brodmann areas -> 8 functional/lobar groups."""
    return group_by_id(table, BRODMANN_GROUPS)


def jhu_grouping(table: LabelTable) -> dict[str, list[int]]:
    """JHU white-matter tracts -> 7 tract families."""
    return group_by_name(table, JHU_RULES)


def harvard_oxford_grouping(table: LabelTable) -> dict[str, list[int]]:
    """Harvard-Oxford cortical regions -> 7 lobes/areas."""
    return group_by_name(table, HARVARD_OXFORD_RULES)


def inia19_grouping(table: LabelTable) -> dict[str, list[int]]:
    """INIA19 NeuroMaps ids (no names shipped) -> 8 blocks of neighbouring ids.

    NeuroMaps numbers a left structure ``i`` and its right twin ``1000 + i``, so blocks are cut on
    ``id % 1000`` and each class holds both hemispheres' ids.
    """
    folded: dict[int, str] = {i % INIA19_RIGHT_OFFSET: f"label_{i % INIA19_RIGHT_OFFSET}" for i in table}
    groups = group_by_id_blocks(folded, k=8)
    return {cls: sorted(i for i in table if i % INIA19_RIGHT_OFFSET in set(ids)) for cls, ids in groups.items()}


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TaskSpec:
    """One patch classification task.

    Parameters
    ----------
    name : registry key.
    t1 : file name of the T1 template (looked up in examples/data, then the system directory).
    atlas : file name of the label map (any grid: mapped onto the T1 through the affines).
    grouping : atlas label table -> class name -> atlas ids.
    patch_size : patch side in pixels, as cut (what the DICOM/NIfTI files hold).
    output_size : side after resizing (the h5 writer; ingest's ``--size``).
    spacing_mm : pixel spacing at which patches are sampled from the T1.
    label_table : file name of the label table, or a function of the atlas ids giving one.
    subject : short id of the template brain (manifest patients are ``<subject>-left/right``).
    description : one line for ``--list``.
    """

    name: str
    t1: str
    atlas: str
    grouping: Grouping
    patch_size: int
    output_size: int
    spacing_mm: float
    label_table: str | Callable[[np.ndarray], LabelTable]
    subject: str = "ch2"
    description: str = ""


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("aal10", "ch2.nii.gz", "aal.nii.gz", aal10_grouping, 64, 32, 1.0, "aal.nii.txt",
                 description="AAL -> 10 classes, 64 mm patches at 1 mm resized to 32 (default; shipped data)"),
        TaskSpec("aal10_p32", "ch2.nii.gz", "aal.nii.gz", aal10_grouping, 32, 32, 1.0, "aal.nii.txt",
                 description="AAL -> 10 classes, 32 mm patches (less context: harder)"),
        TaskSpec("aal_lobes4", "ch2.nii.gz", "aal.nii.gz", aal_lobes4_grouping, 64, 32, 1.0, "aal.nii.txt",
                 description="AAL -> 4 cerebral lobes (easier)"),
        TaskSpec("aal10_ch2better", "ch2better.nii.gz", "aal.nii.gz", aal10_grouping, 64, 32, 0.5, "aal.nii.txt",
                 description="AAL -> 10 classes on the 0.5 mm ch2better, 32 mm patches"),
        TaskSpec("brodmann", "ch2.nii.gz", "brodmann.nii.gz", brodmann_grouping, 64, 32, 1.0, brodmann_table,
                 description="Brodmann areas -> 8 groups"),
        TaskSpec("jhu_tracts", "ch2.nii.gz", "JHU-WhiteMatter-labels-1mm.nii.gz", jhu_grouping, 48, 32, 1.0,
                 "JHU-WhiteMatter-labels-1mm.nii.txt",
                 description="JHU white matter -> 7 tract families, 48 mm patches (hard)"),
        TaskSpec("harvardoxford", "ch2.nii.gz", "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz",
                 harvard_oxford_grouping, 64, 32, 1.0, harvard_oxford_table,
                 description="Harvard-Oxford cortical -> 7 lobes/areas"),
        TaskSpec("aicha", "ch2.nii.gz", "AICHAmc.nii.gz", aal10_grouping, 64, 32, 1.0, "AICHAmc.nii.txt",
                 description="AICHA (2 mm, x flipped) -> the aal10 classes without cerebellum (9)"),
        TaskSpec("inia19", "inia19-t1-brain.nii.gz", "inia19-NeuroMaps.nii.gz", inia19_grouping, 64, 32, 0.5,
                 numbered_table, subject="inia19",
                 description="macaque INIA19 NeuroMaps -> 8 id blocks, 32 mm patches at 0.5 mm"),
    )
}
DEFAULT_TASK = "aal10"


def resolve_file(name: str, templates_dir: Path | None = None) -> Path:
    """Find a template file: ``templates_dir`` if given, else examples/data, then the system copy.

    Raises
    ------
    MissingTemplateError
        Not found; the message names the Debian package that provides it.
    """
    dirs = [templates_dir] if templates_dir is not None else [SHIPPED_DIR, SYSTEM_DIR]
    for directory in dirs:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    where = ", ".join(str(d) for d in dirs)
    raise MissingTemplateError(
        f"{name} not found in {where}; install the Debian package {DEBIAN_PACKAGE} "
        f"(apt-get install {DEBIAN_PACKAGE}) or pass --templates DIR"
    )


def get_task(name: str) -> TaskSpec:
    """The registered task ``name`` (ValueError listing the known ones otherwise)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


# --------------------------------------------------------------------------- volumes


@dataclass
class Volume:
    """A 3D image with its voxel-to-world (RAS mm) affine."""

    data: np.ndarray
    affine: np.ndarray
    path: Path

    @property
    def voxel_size(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def load_volume(path: Path, *, labels: bool = False) -> Volume:
    """Load a NIfTI volume: float32 for images, int32 for label maps (no rescaling of labels).

    The last two volumes loaded are cached (read-only arrays): building several tasks or sizes
    from one template in a process decompresses it once.
    """
    data, affine = _load_array(str(Path(path).resolve()), labels)
    return Volume(data=data, affine=affine.copy(), path=Path(path))


@functools.lru_cache(maxsize=2)
def _load_array(path: str, labels: bool) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image = nib.load(str(path))
    if labels:
        data = np.asarray(image.dataobj).astype(np.int32)
    else:
        data = np.asarray(image.get_fdata(dtype=np.float32), dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    data.flags.writeable = False
    return data, np.asarray(image.affine, dtype=np.float64)


def world_to_voxel(volume: Volume, world: np.ndarray) -> np.ndarray:
    """World coordinates [..., 3] -> continuous voxel indices [..., 3] of ``volume``."""
    inverse = np.linalg.inv(volume.affine)
    return world @ inverse[:3, :3].T + inverse[:3, 3]


def voxel_to_world(volume: Volume, index: np.ndarray) -> np.ndarray:
    """Voxel indices [..., 3] -> world coordinates [..., 3] (RAS mm)."""
    return index @ volume.affine[:3, :3].T + volume.affine[:3, 3]


# --------------------------------------------------------------------------- patches


@dataclass
class PatchSet:
    """The patches of one task, raw (template intensities), before any writer.

    ``images`` [N, P, P] float32 with row 0 anterior and column 0 lateral (left patches run in +x,
    mirrored right patches in -x); ``centres`` [N, 3] world mm; ``split`` holds "train"/"val"/"test";
    ``hemisphere`` "left"/"right"; ``slice_index`` the T1 voxel index of the patch's axial plane.
    """

    task: TaskSpec
    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    hemisphere: np.ndarray
    centres: np.ndarray
    slice_index: np.ndarray
    class_names: list[str]
    spacing_mm: float
    slice_spacing_mm: float
    background: float
    window: tuple[float, float]
    value_range: tuple[float, float]
    midline: str
    seed: int
    input_hash: str
    inputs: list[Path] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Class name -> split -> number of patches."""
        return {
            name: {s: int(np.sum((self.labels == k) & (self.split == s))) for s in SPLITS}
            for k, name in enumerate(self.class_names)
        }


def pixel_offsets(patch_size: int, spacing_mm: float) -> np.ndarray:
    """Offsets (mm) of the pixel centres from the patch centre along one axis; the centre pixel
    is index ``patch_size // 2``."""
    return (np.arange(patch_size) - patch_size // 2) * spacing_mm


def patch_world_grid(centres: np.ndarray, hemisphere: str, patch_size: int, spacing_mm: float) -> np.ndarray:
    """World coordinates [N, P, P, 3] of every pixel of axial patches centred at ``centres``.

    Rows run anterior -> posterior. Columns run towards +x for the left hemisphere and towards -x
    for the right one, which mirrors right patches so both hemispheres look alike (column 0 is
    lateral, the last column medial).
    """
    offsets = pixel_offsets(patch_size, spacing_mm)
    column_sign = 1.0 if hemisphere == "left" else -1.0
    grid = np.empty((len(centres), patch_size, patch_size, 3), dtype=np.float64)
    grid[..., 0] = centres[:, None, None, 0] + column_sign * offsets[None, None, :]
    grid[..., 1] = centres[:, None, None, 1] - offsets[None, :, None]
    grid[..., 2] = centres[:, None, None, 2]
    return grid


def crosses_midline(centres: np.ndarray, hemisphere: str, patch_size: int, spacing_mm: float) -> np.ndarray:
    """Whether the patch of each centre holds a pixel at or beyond x = 0."""
    offsets = pixel_offsets(patch_size, spacing_mm)
    if hemisphere == "left":
        return centres[:, 0] + offsets.max() >= 0
    return centres[:, 0] - offsets.max() <= 0


def extract_patches(
    t1: Volume, centres: np.ndarray, hemisphere: str, patch_size: int, spacing_mm: float, background: float
) -> np.ndarray:
    """Cut axial patches [N, P, P] (linear interpolation) and blank the other hemisphere.

    Pixels at or beyond the midline (x >= 0 for left patches, x <= 0 for right ones) get
    ``background``, so no patch shows the hemisphere of the other split.
    """
    from scipy.ndimage import map_coordinates

    if len(centres) == 0:
        return np.zeros((0, patch_size, patch_size), dtype=np.float32)
    grid = patch_world_grid(centres, hemisphere, patch_size, spacing_mm)
    index = world_to_voxel(t1, grid.reshape(-1, 3)).T
    values = map_coordinates(t1.data, index, order=1, mode="constant", cval=background)
    patches = values.reshape(len(centres), patch_size, patch_size).astype(np.float32)
    other_side = grid[..., 0] >= 0 if hemisphere == "left" else grid[..., 0] <= 0
    patches[other_side] = background
    return patches


def candidate_centres(
    t1: Volume, atlas: Volume, groups: dict[str, list[int]], patch_size: int, spacing_mm: float, midline: str,
) -> dict[tuple[str, str], np.ndarray]:
    """World coordinates [M, 3] of the atlas voxels usable as patch centres, per class and hemisphere.

    A voxel qualifies if its atlas id belongs to a class, it lies in a hemisphere (x < 0 left,
    x > 0 right), its T1 value is above the background (in-brain), its axial plane lies inside the
    T1, and, under the ``reject`` policy, its patch does not reach the midline.

    Returns
    -------
    dict
        ``(class_name, "left" | "right")`` -> world coordinates of the candidate centres.
    """
    # One pass over the atlas: a lookup table from atlas id to class index (-1: no class).
    lookup = np.full(int(atlas.data.max()) + 1, -1, dtype=np.int32)
    for k, ids in enumerate(groups.values()):
        lookup[[i for i in ids if 0 <= i < len(lookup)]] = k
    class_map = lookup[np.clip(atlas.data, 0, None)]
    index = np.argwhere(class_map >= 0)
    class_of = class_map[tuple(index.T)]
    world = voxel_to_world(atlas, index.astype(np.float64))
    t1_index = world_to_voxel(t1, world)
    usable = np.all((t1_index > -0.5) & (t1_index < np.array(t1.data.shape) - 0.5), axis=1)
    usable &= world[:, 0] != 0
    nearest = np.rint(t1_index[usable]).astype(np.int64)
    usable[usable] = t1.data[nearest[:, 0], nearest[:, 1], nearest[:, 2]] > t1_background(t1)
    out: dict[tuple[str, str], np.ndarray] = {}
    for k, class_name in enumerate(groups):
        for hemisphere in ("left", "right"):
            side = world[:, 0] < 0 if hemisphere == "left" else world[:, 0] > 0
            centres = world[usable & side & (class_of == k)]
            if midline == "reject":
                centres = centres[~crosses_midline(centres, hemisphere, patch_size, spacing_mm)]
            out[class_name, hemisphere] = centres
    return out


_CANDIDATE_CACHE: dict[tuple, dict[tuple[str, str], np.ndarray]] = {}
_CANDIDATE_CACHE_SIZE = 4


def cached_candidate_centres(
    t1: Volume, atlas: Volume, groups: dict[str, list[int]], patch_size: int, spacing_mm: float, midline: str,
) -> dict[tuple[str, str], np.ndarray]:
    """:func:`candidate_centres`, remembered for the last few (files, grouping, geometry) keys:
    the scan of the atlas dominates the cost of small builds (tests, several sizes of a task)."""
    key = (str(t1.path.resolve()), str(atlas.path.resolve()), tuple((c, tuple(ids)) for c, ids in groups.items()),
           patch_size, spacing_mm, midline)
    if key not in _CANDIDATE_CACHE:
        if len(_CANDIDATE_CACHE) >= _CANDIDATE_CACHE_SIZE:
            _CANDIDATE_CACHE.pop(next(iter(_CANDIDATE_CACHE)))
        _CANDIDATE_CACHE[key] = candidate_centres(t1, atlas, groups, patch_size, spacing_mm, midline)
    return _CANDIDATE_CACHE[key]


def t1_background(t1: Volume) -> float:
    """The intensity of the empty space around the head (the volume's minimum)."""
    return float(t1.data.min())


def file_digest(paths: Sequence[Path]) -> str:
    """SHA-256 over the bytes of the input files (the provenance input hash)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def choose_centres(candidates: np.ndarray, counts: Sequence[int], rng: np.random.Generator, what: str) -> list[np.ndarray]:
    """Draw disjoint random subsets of ``candidates`` of the given sizes (fewer, with a warning,
    when the class has too few candidates)."""
    wanted = int(sum(counts))
    if len(candidates) < wanted:
        log.warning("%s: only %d usable centres for %d requested patches", what, len(candidates), wanted)
    order = rng.permutation(len(candidates))
    chosen: list[np.ndarray] = []
    start = 0
    for n in counts:
        take = order[start:start + n]
        start += len(take)
        chosen.append(candidates[take] if len(take) else np.zeros((0, 3)))
    return chosen


def class_groups(task: TaskSpec, atlas: Volume, templates_dir: Path | None = None) -> dict[str, list[int]]:
    """Class name -> atlas ids for ``task`` (reads the label table)."""
    if isinstance(task.label_table, str):
        table = read_label_table(resolve_file(task.label_table, templates_dir))
    else:
        table = task.label_table(np.unique(atlas.data))
    groups = task.grouping(table)
    if not groups:
        raise ValueError(f"task {task.name}: the grouping matched no atlas label")
    return groups


def build_patches(
    task: TaskSpec | str,
    *,
    train_per_class: int = 120,
    test_per_class: int = 40,
    val_per_class: int | None = None,
    seed: int = 0,
    midline: str = "mask",
    templates_dir: Path | None = None,
) -> PatchSet:
    """Sample and cut the patches of one task (no files written).

    Parameters
    ----------
    task : a :class:`TaskSpec` or a name in :data:`TASKS`.
    train_per_class, test_per_class : patches per class (train: left hemisphere; test: right,
        mirrored).
    val_per_class : left-hemisphere patches per class for the val split, disjoint from train;
        default 10 % of ``train_per_class`` (at least 1).
    seed : seeds all sampling; the same arguments give the same patches.
    midline : ``"mask"`` (blank pixels across x = 0) or ``"reject"`` (drop such centres).
    templates_dir : where the template files are (default examples/data then the system copy).

    Raises
    ------
    MissingTemplateError
        A file of the task is not installed.
    """
    spec = get_task(task) if isinstance(task, str) else task
    if midline not in MIDLINE_POLICIES:
        raise ValueError(f"midline must be one of {MIDLINE_POLICIES}, got {midline!r}")
    if val_per_class is None:
        val_per_class = max(1, round(0.1 * train_per_class))
    t1_path = resolve_file(spec.t1, templates_dir)
    atlas_path = resolve_file(spec.atlas, templates_dir)
    t1 = load_volume(t1_path)
    atlas = load_volume(atlas_path, labels=True)
    groups = class_groups(spec, atlas, templates_dir)
    background = t1_background(t1)
    counts_by_split = {"train": train_per_class, "val": val_per_class, "test": test_per_class}

    candidates_of = cached_candidate_centres(t1, atlas, groups, spec.patch_size, spec.spacing_mm, midline)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("images", "labels", "split", "hemi", "centres")}
    for label, class_name in enumerate(groups):
        for hemisphere, splits in (("left", ("train", "val")), ("right", ("test",))):
            # One generator per class and hemisphere: adding a class does not reshuffle the others.
            rng = np.random.default_rng([seed, label, 0 if hemisphere == "left" else 1])
            chosen = choose_centres(
                candidates_of[class_name, hemisphere], [counts_by_split[s] for s in splits], rng, f"{spec.name}/{class_name}/{hemisphere}"
            )
            for split_name, centres in zip(splits, chosen):
                patches = extract_patches(t1, centres, hemisphere, spec.patch_size, spec.spacing_mm, background)
                parts["images"].append(patches)
                parts["labels"].append(np.full(len(centres), label, dtype=np.int64))
                parts["split"].append(np.full(len(centres), split_name, dtype=object))
                parts["hemi"].append(np.full(len(centres), hemisphere, dtype=object))
                parts["centres"].append(centres)
    centres = np.concatenate(parts["centres"]).reshape(-1, 3)
    slice_index = np.rint(world_to_voxel(t1, centres)[:, 2]).astype(np.int32)
    low, high = (float(v) for v in np.percentile(t1.data, WINDOW_PERCENTILES))
    return PatchSet(
        task=spec,
        images=np.concatenate(parts["images"]),
        labels=np.concatenate(parts["labels"]),
        split=np.concatenate(parts["split"]),
        hemisphere=np.concatenate(parts["hemi"]),
        centres=centres,
        slice_index=slice_index,
        class_names=list(groups),
        spacing_mm=spec.spacing_mm,
        slice_spacing_mm=float(t1.voxel_size[2]),
        background=background,
        window=(low, high),
        value_range=(float(t1.data.min()), float(t1.data.max())),
        midline=midline,
        seed=seed,
        input_hash=file_digest([t1_path, atlas_path]),
        inputs=[t1_path, atlas_path],
    )


# --------------------------------------------------------------------------- file trees


def patient_of(patches: PatchSet, split: str) -> str:
    """The manifest patient of a split: ``<subject>-left``, ``<subject>-left-val``, ``<subject>-right``.

    Ingest refuses a patient in two splits, so val (also left hemisphere) gets its own id; the
    ids still say which hemisphere each split comes from.
    """
    return {"train": f"{patches.task.subject}-left", "val": f"{patches.task.subject}-left-val",
            "test": f"{patches.task.subject}-right"}[split]


def file_names(patches: PatchSet) -> list[str]:
    """``<class>/patch_00001`` per patch, numbered within each class in set order."""
    seen: dict[int, int] = {}
    names = []
    for label in patches.labels.tolist():
        seen[label] = seen.get(label, 0) + 1
        names.append(f"{patches.class_names[label]}/patch_{seen[label]:05d}")
    return names


def prepare_tree(root: Path, overwrite: bool) -> None:
    """Create ``root``; refuse to mix with an earlier tree unless ``overwrite`` (then clear it)."""
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty; pass --overwrite to replace it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


def write_manifest(root: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """Write ``root/manifest.csv`` (``path,label,patient,split``; paths relative to ``root``)."""
    path = root / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)
    return path


def manifest_rows(patches: PatchSet, suffix: str) -> list[tuple[str, str, str, str]]:
    """One manifest row per patch, in the order of :func:`file_names`."""
    return [
        (name + suffix, patches.class_names[label], patient_of(patches, split), split)
        for name, label, split in zip(file_names(patches), patches.labels.tolist(), patches.split.tolist())
    ]


def dicom_scaling(value_range: tuple[float, float]) -> tuple[float, float]:
    """(slope, intercept) mapping uint16 0..65535 onto the template's intensity range.

    The slope is rounded to what a DS element holds, and pixels are computed with that rounded
    slope, so ``stored * slope + intercept`` recovers the intensity to within ``slope / 2``.
    """
    low, high = value_range
    slope = float(f"{max(high - low, 1e-6) / 65535:.10g}")
    return slope, float(f"{low:.10g}")


def write_dicom_tree(patches: PatchSet, root: Path, *, overwrite: bool = False) -> Path:
    """Write one MR Image Storage file per patch under ``root/<class>/`` and a manifest.

    The patient is a clearly synthetic one (the template brain); UIDs are derived from the task,
    seed and patch so a rebuild gives identical files. Each patch is its own single-image series
    (patches of one class are not slices of one volume: sharing a series would make ingest's
    slice-ordering checks warn about gaps and repeated positions).
    Returns the manifest path.
    """
    from pydicom.uid import generate_uid

    prepare_tree(root, overwrite)
    slope, intercept = dicom_scaling(patches.value_range)
    low, high = patches.window
    # Same task, seed, policy and size: same UIDs (rebuilds are byte-identical); else new ones.
    key = f"{patches.task.name}/seed{patches.seed}/{patches.midline}/{sorted(patches.counts().items())}"
    study_uid = generate_uid(entropy_srcs=[key, "study"])
    frame_uid = generate_uid(entropy_srcs=[key, "frame"])
    for i, name in enumerate(file_names(patches)):
        series_number = i + 1
        stored = np.clip(np.rint((patches.images[i] - intercept) / slope), 0, 65535).astype(np.uint16)
        dataset = _mr_dataset(
            patches, i, stored,
            study_uid=study_uid,
            series_uid=generate_uid(entropy_srcs=[key, "series", name]),
            sop_uid=generate_uid(entropy_srcs=[key, "sop", name]),
            frame_uid=frame_uid,
            series_number=series_number,
            instance_number=int(name.rsplit("_", 1)[1]),
            slope=slope, intercept=intercept, window=(low, high),
        )
        path = root / f"{name}.dcm"
        path.parent.mkdir(exist_ok=True)
        dataset.save_as(path, enforce_file_format=True)
    return write_manifest(root, manifest_rows(patches, ".dcm"))


def _mr_dataset(
    patches: PatchSet, i: int, stored: np.ndarray, *, study_uid: str, series_uid: str, sop_uid: str,
    frame_uid: str, series_number: int, instance_number: int, slope: float, intercept: float,
    window: tuple[float, float],
) -> "object":
    """The pydicom dataset of patch ``i`` (geometry in DICOM's LPS patient coordinates)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)

    class_name = patches.class_names[int(patches.labels[i])]
    hemisphere = str(patches.hemisphere[i])
    spec = patches.task
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Modality = "MR"
    ds.Manufacturer = "medcondense example (synthetic subject)"
    # Fixed, obviously fake identity: the template is an average of one volunteer's scans.
    ds.PatientName = "Colin27^Template"
    ds.PatientID = f"{spec.subject.upper()}-SUBJ01"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20000101"
    ds.StudyTime = "000000"
    ds.SeriesDate = "20000101"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.StudyDescription = f"medcondense example {spec.name}"
    ds.SeriesDescription = f"{class_name} {hemisphere} hemisphere"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.SliceThickness = f"{patches.slice_spacing_mm:g}"
    ds.ImageComments = (
        f"Patch of the {spec.t1} template centred in {class_name} ({spec.atlas}); "
        f"{'mirrored left-right ' if hemisphere == 'right' else ''}not a patient image"
    )
    ds.DerivationDescription = f"medcondense examples/brain_patches.py task {spec.name} seed {patches.seed}"

    # Geometry: RAS world -> LPS patient coordinates (negate x and y).
    grid = patch_world_grid(patches.centres[i:i + 1], hemisphere, spec.patch_size, spec.spacing_mm)[0]
    first = grid[0, 0]
    column_sign = 1.0 if hemisphere == "left" else -1.0
    ds.ImagePositionPatient = [f"{-first[0]:.4f}", f"{-first[1]:.4f}", f"{first[2]:.4f}"]
    ds.ImageOrientationPatient = [f"{-column_sign:g}", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{first[2]:.4f}"
    ds.PixelSpacing = [f"{spec.spacing_mm:g}", f"{spec.spacing_mm:g}"]

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{slope:.10g}"
    ds.RescaleIntercept = f"{intercept:.10g}"
    ds.RescaleType = "US"
    low, high = window
    ds.WindowCenter = f"{(low + high) / 2:.4f}"
    ds.WindowWidth = f"{max(high - low, 1e-3):.4f}"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    return ds


def write_nifti_tree(patches: PatchSet, root: Path, *, overwrite: bool = False) -> Path:
    """Write one 2D NIfTI (H, W, 1) float32 per patch under ``root/<class>/`` and a manifest.

    The affine is diagonal with the pixel spacing (and the T1 slice spacing along the third
    axis). Returns the manifest path.
    """
    import nibabel as nib

    prepare_tree(root, overwrite)
    affine = np.diag([patches.spacing_mm, patches.spacing_mm, patches.slice_spacing_mm, 1.0])
    for i, name in enumerate(file_names(patches)):
        image = nib.Nifti1Image(patches.images[i][:, :, None].astype(np.float32), affine)
        image.header.set_xyzt_units("mm")
        path = root / f"{name}.nii.gz"
        path.parent.mkdir(exist_ok=True)
        nib.save(image, str(path))
    return write_manifest(root, manifest_rows(patches, ".nii.gz"))


# --------------------------------------------------------------------------- medcondense h5


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize [N, P, P] to [N, size, size]: block means for integer factors (area averaging, no
    aliasing), linear interpolation otherwise."""
    n, p, _ = images.shape
    if p == size:
        return images.astype(np.float32, copy=True)
    if p % size == 0:
        f = p // size
        return images.reshape(n, size, f, size, f).mean(axis=(2, 4)).astype(np.float32)
    from scipy.ndimage import zoom

    return zoom(images, (1, size / p, size / p), order=1).astype(np.float32)


def to_image_set(patches: PatchSet, *, started: float | None = None, out_path: Path | None = None) -> "object":
    """The patches as a medcondense ``ImageSet`` (resized, window-normalized to [0, 1])."""
    from medcondense.provenance import make_provenance
    from medcondense.store import ImageSet

    spec = patches.task
    low, high = patches.window
    images = resize_images(patches.images, spec.output_size)
    images = np.clip((images - low) / max(high - low, 1e-6), 0.0, 1.0)[:, None].astype(np.float32)
    split = np.array([SPLIT_CODES[s] for s in patches.split.tolist()], dtype=np.uint8)
    train = images[split == SPLIT_CODES["train"]]
    mean = [float(train[:, c].mean()) for c in range(images.shape[1])] if len(train) else [0.0]
    std = [float(train[:, c].std()) for c in range(images.shape[1])] if len(train) else [1.0]
    pixel_mm = spec.spacing_mm * spec.patch_size / spec.output_size
    normalization = {"method": "window", "train_mean": mean, "train_std": std}
    config = {
        "task": spec.name, "t1": spec.t1, "atlas": spec.atlas, "patch_size": spec.patch_size,
        "output_size": spec.output_size, "spacing_mm": spec.spacing_mm, "midline": patches.midline,
        "counts": patches.counts(),
    }
    meta = {
        "source_path": np.array(
            [f"{spec.name}/{patches.class_names[lab]}/{i}" for i, lab in enumerate(patches.labels.tolist())],
            dtype=object,
        ),
        "series_key": np.array(
            [f"{spec.name}/{patches.class_names[lab]}/{h}" for lab, h in zip(patches.labels.tolist(), patches.hemisphere.tolist())],
            dtype=object,
        ),
        "patient_key": np.array([patient_of(patches, s) for s in patches.split.tolist()], dtype=object),
        "slice_index": patches.slice_index.astype(np.int32),
        "site": np.array([""] * len(split), dtype=object),
        "spacing": np.tile(np.array([pixel_mm, pixel_mm, patches.slice_spacing_mm], dtype=np.float32), (len(split), 1)),
    }
    attrs = {
        "modality": "MR",
        "laterality": True,
        "normalization": normalization,
        "preprocessing": {
            "window": {"method": "percentile", "percentiles": list(WINDOW_PERCENTILES), "low": low, "high": high,
                       "of": "whole T1 volume"},
            "spacing": [pixel_mm, pixel_mm],
            "size": [spec.output_size, spec.output_size],
            "patch_size": spec.patch_size,
            "patch_spacing_mm": spec.spacing_mm,
            "resize": "block mean" if spec.patch_size % spec.output_size == 0 else "linear",
            "normalization": normalization,
            "split_rule": "train/val: left hemisphere; test: right hemisphere mirrored left-right",
            "midline": patches.midline,
            "task": spec.name,
        },
        "provenance": make_provenance(
            stage="examples.brain_patches",
            config=config,
            paths=[*patches.inputs, *([out_path] if out_path else [])],
            input_hash=patches.input_hash,
            seed=patches.seed,
            device="cpu",
            started=started,
        ),
    }
    return ImageSet(
        images=images, labels=patches.labels.astype(np.int64), split=split,
        class_names=list(patches.class_names), kind="real", meta=meta, attrs=attrs,
    )


def write_h5(patches: PatchSet, path: Path, *, overwrite: bool = False, started: float | None = None) -> Path:
    """Write the patches as a medcondense HDF5 file (see :func:`to_image_set`); returns ``path``."""
    from medcondense.store import write

    write(path, to_image_set(patches, started=started, out_path=path), overwrite=overwrite)
    return path


# --------------------------------------------------------------------------- task builder


def parse_formats(text: str | Sequence[str]) -> list[str]:
    """``"dicom,nifti"`` or a list -> validated list of formats."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in items if t not in FORMATS]
    if unknown or not items:
        raise ValueError(f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return items


def build_task(
    name: str,
    out_dir: str | Path,
    formats: str | Sequence[str] = ("dicom", "nifti"),
    train_per_class: int = 120,
    test_per_class: int = 40,
    seed: int = 0,
    *,
    val_per_class: int | None = None,
    midline: str = "mask",
    templates_dir: str | Path | None = None,
    overwrite: bool = False,
) -> dict:
    """Build task ``name`` into ``out_dir`` in the given formats.

    Parameters
    ----------
    name : a key of :data:`TASKS`.
    out_dir : output folder; gets ``dicom/``, ``nifti/`` and/or ``data.h5``.
    formats : any of ``dicom``, ``nifti``, ``h5`` (list or comma-separated string).
    train_per_class, test_per_class, val_per_class, seed, midline, templates_dir :
        see :func:`build_patches`.
    overwrite : replace earlier outputs in ``out_dir``.

    Returns
    -------
    dict
        ``task``, ``out_dir``, ``classes`` (name -> split -> count), ``n_images``, ``outputs``
        (format -> manifest or h5 path) and ``seconds``.
    """
    started = time.time()
    chosen = parse_formats(formats)
    out = Path(out_dir)
    patches = build_patches(
        name, train_per_class=train_per_class, test_per_class=test_per_class, val_per_class=val_per_class,
        seed=seed, midline=midline, templates_dir=Path(templates_dir) if templates_dir else None,
    )
    log.info("%s: %d patches of %d classes cut in %.1f s", name, len(patches.labels), len(patches.class_names),
             time.time() - started)
    outputs: dict[str, str] = {}
    if "dicom" in chosen:
        outputs["dicom"] = str(write_dicom_tree(patches, out / "dicom", overwrite=overwrite))
    if "nifti" in chosen:
        outputs["nifti"] = str(write_nifti_tree(patches, out / "nifti", overwrite=overwrite))
    if "h5" in chosen:
        outputs["h5"] = str(write_h5(patches, out / "data.h5", overwrite=overwrite, started=started))
    return {
        "task": name,
        "out_dir": str(out),
        "classes": patches.counts(),
        "n_images": int(len(patches.labels)),
        "outputs": outputs,
        "seconds": round(time.time() - started, 2),
    }


def describe_tasks(templates_dir: Path | None = None) -> list[dict]:
    """One dict per task: name, description, availability, classes (when its files are here)."""
    rows = []
    for spec in TASKS.values():
        row: dict = {"name": spec.name, "description": spec.description, "patch_size": spec.patch_size,
                     "output_size": spec.output_size, "spacing_mm": spec.spacing_mm}
        try:
            atlas = load_volume(resolve_file(spec.atlas, templates_dir), labels=True)
            resolve_file(spec.t1, templates_dir)
            row["classes"] = list(class_groups(spec, atlas, templates_dir))
            row["available"] = True
        except MissingTemplateError as error:
            row["available"] = False
            row["missing"] = str(error)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- CLI


def make_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="brain_patches.py",
        description=textwrap.dedent("""\
            Build a brain-region patch classification task from a T1 template and an atlas:
            2D axial patches labelled by the anatomical class of their centre voxel.

            Split rule: train and val patches come from the left hemisphere, test patches from
            the right hemisphere mirrored left-right; no patch shows the other hemisphere
            (--midline). Writes a DICOM folder-per-class tree and a NIfTI tree (each with a
            manifest.csv: path,label,patient,split) and/or a medcondense HDF5 file (data.h5).
            """),
        epilog=(
            "examples:\n"
            "  python examples/brain_patches.py --list\n"
            "  python examples/brain_patches.py --out examples/generated/aal10          # dicom+nifti, 120/40 per class\n"
            "  medcondense ingest examples/generated/aal10/dicom \\\n"
            "      --labels examples/generated/aal10/dicom/manifest.csv --size 32 -o aal10.h5\n"
            "  python examples/brain_patches.py --task jhu_tracts --format h5 --train-per-class 1000 "
            "--test-per-class 300 --out bench/jhu\n\n"
            "Ingest with --labels <tree>/manifest.csv: it carries the hemisphere split (all patches come\n"
            "from one template brain, so a split by DICOM PatientID alone cannot separate them).\n"
            f"The default task uses examples/data/ (shipped); the others need the Debian package\n"
            f"{DEBIAN_PACKAGE} ({SYSTEM_DIR})."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", default=DEFAULT_TASK, help=f"task name (default {DEFAULT_TASK}; see --list)")
    parser.add_argument("--list", action="store_true", help="list the tasks, their classes and availability, then exit")
    parser.add_argument("--out", "-o", type=Path, default=None,
                        help="output folder (default examples/generated/<task>)")
    parser.add_argument("--format", default="dicom,nifti",
                        help="comma-separated outputs among dicom, nifti, h5 (default dicom,nifti)")
    parser.add_argument("--train-per-class", type=int, default=120, help="left-hemisphere train patches per class (default 120)")
    parser.add_argument("--test-per-class", type=int, default=40, help="right-hemisphere (mirrored) test patches per class (default 40)")
    parser.add_argument("--val-per-class", type=int, default=None,
                        help="left-hemisphere val patches per class, disjoint from train (default 10%% of train)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same patches (default 0)")
    parser.add_argument("--midline", choices=MIDLINE_POLICIES, default="mask",
                        help="mask: blank pixels across x=0 (default); reject: drop centres whose patch crosses x=0")
    parser.add_argument("--templates", type=Path, default=None,
                        help=f"folder holding the template/atlas files (default examples/data, then {SYSTEM_DIR})")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier outputs in --out")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 usage error, 3 missing template files)."""
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.list:
        for row in describe_tasks(args.templates):
            classes = f"{len(row['classes'])} classes: {', '.join(row['classes'])}" if row["available"] else "NOT INSTALLED"
            print(f"{row['name']:<16} {row['description']}\n{'':<16} {classes}")
        return 0
    out = args.out or EXAMPLES_DIR / "generated" / args.task
    try:
        summary = build_task(
            args.task, out, args.format, args.train_per_class, args.test_per_class, args.seed,
            val_per_class=args.val_per_class, midline=args.midline, templates_dir=args.templates,
            overwrite=args.overwrite,
        )
    except MissingTemplateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    totals = {s: sum(c[s] for c in summary["classes"].values()) for s in SPLITS}
    print(f"{summary['task']}: {summary['n_images']} patches, {len(summary['classes'])} classes "
          f"(train {totals['train']}, val {totals['val']}, test {totals['test']}) in {summary['seconds']} s")
    for fmt, path in summary["outputs"].items():
        print(f"  {fmt}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``medcondense merge A.h5 B.h5 ... -o merged.h5``: several sites' sets as one.

Steps: read every part (validated, content hash checked) -> decide the output kind -> check that
the parts can share one image space (size, channels, spacing, axis, modality, window rule,
normalization) -> align classes by name -> map each part's values into the first part's
intensity space -> per-image site, site-prefixed identifying keys -> write atomically.

Kinds are never mixed silently: all synthetic -> ``synthetic``; all real -> ``real`` (the pooled,
centralised baseline); all subset -> ``subset``; anything else is refused (exit 2) unless
``--allow-mixed``, and the output's kind is then ``mixed`` (schema ``medcondense/2``), which every
stage treats as real data.

Intensity spaces. Every normalization medcondense writes is an affine map of windowed values
(``window``: identity; ``zscore``: ``(x - mean) / std``; ``ct``: clip, then ``(x - mean) / std``).
Parts made with the same window rule are mapped into the first part's space by undoing their own
map and applying the first part's; ``ct`` parts only when every part clips at the same bounds
(a different clip cannot be undone). Anything else is refused with the setting that differs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medcondense import runkey, store
from medcondense.config import MergeConfig, config_to_dict
from medcondense.errors import ConfigError, DataMismatchError

log = logging.getLogger(__name__)

# settings that shape the pixels: parts must agree (name -> how a message calls it)
_SHAPING = {"spacing": "spacing (--spacing)", "axis": "slicing axis (--axis)", "channels": "channel handling (--channels)"}
_CLIP_TOL = 1e-4


@dataclass
class Part:
    """One input of the merge."""

    path: Path
    image_set: store.ImageSet
    site: str | None  # None: per-image sites from the part's own meta/site

    @property
    def name(self) -> str:
        return self.path.name


# ----------------------------------------------------------------------------- checks


def output_kind(parts: list[Part], allow_mixed: bool) -> str:
    """The merged set's kind; ConfigError for a mix without ``--allow-mixed``."""
    kinds = {p.image_set.kind for p in parts}
    if len(kinds) == 1:
        return kinds.pop()
    listing = ", ".join(f"{p.name} is {p.image_set.kind}" for p in parts)
    if not allow_mixed:
        raise ConfigError(
            f"refusing to mix kinds ({listing}): a merge of synthetic and real images is neither; "
            "pass --allow-mixed to write a set of kind 'mixed', which is treated as real data everywhere"
        )
    log.warning("mixing kinds (%s): the output's kind is 'mixed' and counts as real data", listing)
    return "mixed"


def _window_rule(pre: dict[str, Any]) -> str:
    from medcondense.ingest import protocol as proto

    try:
        return proto.window_rule(pre)
    except ConfigError:  # several windows or per-file VOI: compare what was recorded
        used = ",".join(sorted(pre.get("windows_used") or {}))
        return f"{pre.get('window')} ({used})"


def check_compatible(parts: list[Part]) -> None:
    """DataMismatchError naming the first setting in which a part differs from the first part."""
    from medcondense.ingest import protocol as proto

    first = parts[0]
    ref = first.image_set
    ref_pre = ref.attrs.get("preprocessing") or {}
    for part in parts[1:]:
        s, pre = part.image_set, part.image_set.attrs.get("preprocessing") or {}
        where = f"{part.name} vs {first.name}"
        if s.image_shape[1:] != ref.image_shape[1:]:
            raise DataMismatchError(
                f"image size (--size) differs: {s.image_shape[1]}x{s.image_shape[2]} px vs "
                f"{ref.image_shape[1]}x{ref.image_shape[2]} px ({where}); ingest every site with one --protocol",
                path=part.path,
            )
        if s.image_shape[0] != ref.image_shape[0]:
            raise DataMismatchError(
                f"channels differ: {s.image_shape[0]} vs {ref.image_shape[0]} ({where}); "
                "ingest every site with one --protocol (it pins --channels)", path=part.path,
            )
        for key, label in _SHAPING.items():
            a, b = pre.get(key), ref_pre.get(key)
            if a is not None and b is not None:
                differs = a != b
            else:  # "keep the native spacing" vs a fixed spacing differ; an unrecorded axis does not
                differs = key == "spacing" and (a is None) != (b is None)
            if differs:
                raise DataMismatchError(f"{label} differs: {a!r} vs {b!r} ({where}); ingest every site with "
                                        "one --protocol", path=part.path)
        ma, mb = s.attrs.get("modality"), ref.attrs.get("modality")
        if ma and mb and ma != mb:
            raise DataMismatchError(f"modality differs: {ma} vs {mb} ({where})", path=part.path)
        wa, wb = _window_rule(pre), _window_rule(ref_pre)
        if not proto.same_window(wa, wb):
            raise DataMismatchError(
                f"window (--window) differs: {wa!r} vs {wb!r} ({where}); the values are in different intensity "
                "spaces and cannot be mapped: ingest every site with one --protocol", path=part.path,
            )
        if wa == "percentile" and list(pre.get("percentiles") or []) != list(ref_pre.get("percentiles") or []):
            raise DataMismatchError(
                f"window percentiles differ: {pre.get('percentiles')} vs {ref_pre.get('percentiles')} ({where})",
                path=part.path,
            )
        _affine(part, ref)  # raises for ct parts with other clip bounds


# ----------------------------------------------------------------------------- intensity


def _norm(image_set: store.ImageSet) -> tuple[str, dict[str, Any]]:
    norm = image_set.attrs.get("normalization") or {}
    return str(norm.get("method") or "window"), dict(norm.get("params") or {})


def _to_windowed(method: str, params: dict[str, Any], c: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per channel with ``windowed = stored * scale + offset``."""
    if method == "window":
        return np.ones(c, np.float64), np.zeros(c, np.float64)
    std = np.asarray(params.get("std", [1.0] * c), np.float64)
    mean = np.asarray(params.get("mean", [0.0] * c), np.float64)
    return std, mean


def _affine(part: Part, ref: store.ImageSet) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, offset) per channel mapping the part's stored values into ``ref``'s, or None when
    they already agree. DataMismatchError when the spaces cannot be mapped (ct clip bounds)."""
    c = ref.image_shape[0]
    (m_part, p_part), (m_ref, p_ref) = _norm(part.image_set), _norm(ref)
    if "ct" in (m_part, m_ref):
        clip = lambda p: (np.asarray(p.get("clip_low", []), float), np.asarray(p.get("clip_high", []), float))  # noqa: E731
        same = m_part == m_ref and all(a.shape == b.shape and np.allclose(a, b, atol=_CLIP_TOL, rtol=0)
                                       for a, b in zip(clip(p_part), clip(p_ref)))
        if not same:
            raise DataMismatchError(
                f"normalization cannot be mapped: {m_part} {_clip_text(p_part)} vs {m_ref} {_clip_text(p_ref)}; "
                "ct normalization clips, and a different clip cannot be undone: ingest every site with one "
                "--protocol (it pins the source site's ct constants)", path=part.path,
            )
    s_part, o_part = _to_windowed(m_part, p_part, c)
    s_ref, o_ref = _to_windowed(m_ref, p_ref, c)
    scale, offset = s_part / s_ref, (o_part - o_ref) / s_ref
    if np.allclose(scale, 1.0, atol=1e-7) and np.allclose(offset, 0.0, atol=1e-7):
        return None
    return scale, offset


def _clip_text(params: dict[str, Any]) -> str:
    if "clip_low" not in params:
        return "(no clip)"
    low = ",".join(f"{v:g}" for v in params["clip_low"])
    high = ",".join(f"{v:g}" for v in params["clip_high"])
    return f"clip [{low}]..[{high}]"


def mapped_images(part: Part, ref: store.ImageSet) -> np.ndarray:
    """The part's images in ``ref``'s intensity space (a new array when mapped)."""
    affine = _affine(part, ref)
    images = part.image_set.images
    if affine is None:
        return images
    scale, offset = affine
    log.info("%s: mapped %s values into %s's space (scale %s, offset %s)", part.name,
             _norm(part.image_set)[0], _norm(ref)[0], np.round(scale, 4).tolist(), np.round(offset, 4).tolist())
    return (images * scale[None, :, None, None] + offset[None, :, None, None]).astype(np.float32)


# ----------------------------------------------------------------------------- classes and sites


def merged_classes(parts: list[Part]) -> list[str]:
    """The first part's class order, then classes only later parts have (in their order)."""
    names: list[str] = []
    for part in parts:
        names.extend(n for n in part.image_set.class_names if n not in names)
    return names


def warn_absent(parts: list[Part], class_names: list[str], sites: list[list[str]]) -> dict[str, list[str]]:
    """Warn for each class with no image in a part; returns {class: [sites without it]}."""
    absent: dict[str, list[str]] = {}
    for part, part_sites in zip(parts, sites):
        have = {part.image_set.class_names[i] for i in np.unique(part.image_set.labels)}
        for name in class_names:
            if name not in have:
                site = ",".join(sorted(set(part_sites))) or part.name
                absent.setdefault(name, []).append(site)
                log.warning("class %r is absent at %s (%s): kept; its images come from the other parts",
                            name, site, part.name)
    return absent


def part_sites(part: Part) -> np.ndarray:
    """Per-image site names of one part: --site-names, else its meta/site or ``sites`` attribute,
    else its file name without the extension."""
    n = part.image_set.n
    if part.site is not None:
        return np.array([part.site] * n, dtype=object)
    fallback = _attr_site(part) or part.path.name.removesuffix(".h5").removesuffix(".hdf5")
    recorded = part.image_set.meta.get("site")
    if recorded is None:
        return np.array([fallback] * n, dtype=object)
    return np.array([str(s) or fallback for s in recorded], dtype=object)


def _attr_site(part: Part) -> str | None:
    names = part.image_set.attrs.get("sites")
    if isinstance(names, list) and len(names) == 1:
        return str(names[0])
    return None


# ----------------------------------------------------------------------------- assembling


def _identifying_meta(parts: list[Part], sites: list[np.ndarray], kind: str) -> dict[str, np.ndarray]:
    """Patient, series and source keys prefixed with their site, so keys from two sites never
    collide (two sites may share a salt or a folder layout); none at all for a synthetic set."""
    if kind == "synthetic":
        return {}
    out: dict[str, np.ndarray] = {}
    for name in store.IDENTIFYING_META:
        if not any(name in p.image_set.meta for p in parts):
            continue
        columns = []
        for part, site in zip(parts, sites):
            values = part.image_set.meta.get(name)
            if values is None:  # a synthetic part of a mixed set: no patient behind its images
                columns.append(np.array([""] * part.image_set.n, dtype=object))
            else:
                sep = "/" if name == "source_path" else ":"
                columns.append(np.array([f"{s}{sep}{v}" if str(v) else "" for s, v in zip(site, values)], dtype=object))
        out[name] = np.concatenate(columns)
    return out


def _other_meta(parts: list[Part]) -> dict[str, np.ndarray]:
    """Non-identifying meta every part has (spacing, slice_index): concatenated."""
    out: dict[str, np.ndarray] = {}
    common = set.intersection(*(set(p.image_set.meta) for p in parts)) - set(store.IDENTIFYING_META) - {"site"}
    for name in sorted(common):
        out[name] = np.concatenate([np.asarray(p.image_set.meta[name]) for p in parts])
    return out


def _pooled_stats(parts: list[Part], images: list[np.ndarray], kind: str, split: np.ndarray,
                  merged_images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel train mean/std of the merged set in the output's space: computed from the
    train images when the parts hold real train images; for synthetic parts, the parts' recorded
    real-train statistics mapped into the output's space and pooled (law of total variance,
    weighted by each part's image count), since the real images are not here."""
    from medcondense.ingest.normalize import channel_stats

    if kind != "synthetic":
        return channel_stats(merged_images, split == store.SPLIT_TRAIN)
    ref = parts[0].image_set
    means, variances, weights = [], [], []
    for part in parts:
        mean, std = part.image_set.normalization_stats()
        affine = _affine(part, ref)
        if affine is not None:
            mean, std = mean * affine[0] + affine[1], std * np.abs(affine[0])
        means.append(np.asarray(mean, np.float64))
        variances.append(np.asarray(std, np.float64) ** 2)
        weights.append(float(part.image_set.n))
    w = np.asarray(weights) / sum(weights)
    pooled_mean = sum(wi * m for wi, m in zip(w, means))
    pooled_var = sum(wi * (v + (m - pooled_mean) ** 2) for wi, v, m in zip(w, variances, means))
    return [float(v) for v in pooled_mean], [float(v) for v in np.sqrt(pooled_var)]


def _part_record(part: Part, sites: np.ndarray) -> dict[str, Any]:
    s = part.image_set
    return {
        "sites": sorted({str(x) for x in sites}), "kind": s.kind, "images": s.n,
        "content_hash": s.attrs.get("content_hash") or store.content_hash(s),
        "method": s.attrs.get("method"), "ipc": s.attrs.get("ipc"), "source_hash": s.attrs.get("source_hash"),
        "class_names": list(s.class_names),
    }


def build(parts: list[Part], kind: str) -> tuple[store.ImageSet, dict[str, Any]]:
    """The merged set and a summary of what was done (no I/O)."""
    ref = parts[0].image_set
    class_names = merged_classes(parts)
    index = {name: i for i, name in enumerate(class_names)}
    sites = [part_sites(p) for p in parts]
    absent = warn_absent(parts, class_names, [list(s) for s in sites])
    images = [mapped_images(p, ref) for p in parts]
    labels = [np.array([index[p.image_set.class_names[i]] for i in p.image_set.labels], dtype=np.int64)
              for p in parts]
    merged_images = np.concatenate(images).astype(np.float32, copy=False)
    split = np.concatenate([p.image_set.split for p in parts]).astype(np.uint8)
    site_column = np.concatenate(sites)
    meta = {**_other_meta(parts), **_identifying_meta(parts, sites, kind), "site": site_column}
    method, params = _norm(ref)
    mean, std = _pooled_stats(parts, images, kind, split, merged_images)
    site_names = list(dict.fromkeys(str(s) for s in site_column))
    attrs: dict[str, Any] = {
        "modality": ref.attrs.get("modality"),
        "laterality": any(bool(p.image_set.attrs.get("laterality", True)) for p in parts),
        "normalization": {"method": method, "params": params, "train_mean": mean, "train_std": std},
        "preprocessing": ref.attrs.get("preprocessing") or {},
        "sites": site_names,
        "parts": [_part_record(p, s) for p, s in zip(parts, sites)],
    }
    methods = sorted({str(p.image_set.attrs["method"]) for p in parts if p.image_set.attrs.get("method")})
    if methods and kind in ("synthetic", "subset"):
        attrs["method"] = methods[0] if len(methods) == 1 else "+".join(methods)
        attrs["ipc"] = int(np.bincount(np.concatenate(labels), minlength=len(class_names)).max())
    merged = store.ImageSet(images=merged_images, labels=np.concatenate(labels), split=split,
                            class_names=class_names, kind=kind, meta=meta, attrs=attrs)
    per_site = {name: int((site_column == name).sum()) for name in site_names}
    summary = {"classes": class_names, "absent": absent, "images_per_site": per_site}
    return merged, summary


# ----------------------------------------------------------------------------- run


def read_parts(config: MergeConfig) -> list[Part]:
    """Read every input (validated, hash checked); ConfigError for bad options."""
    if len(config.inputs) < 2:
        raise ConfigError(f"merge needs at least two sets, got {len(config.inputs)}")
    names = list(config.site_names or [])
    if names and len(names) != len(config.inputs):
        raise ConfigError(f"--site-names gives {len(names)} name(s) for {len(config.inputs)} inputs; give one per input")
    if any(not n.strip() for n in names):
        raise ConfigError("--site-names: a site name is empty")
    resolved = [Path(p).resolve() for p in config.inputs]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("the same file is given twice; each part must be another site's set")
    if config.output and Path(config.output).resolve() in resolved:
        raise ConfigError("the output is one of the inputs", path=config.output)
    parts = []
    for i, raw in enumerate(config.inputs):
        image_set = store.read(raw, verify_hash=True)
        parts.append(Part(Path(raw), image_set, names[i].strip() if names else None))
    return parts


def _run_key(parts: list[Part], config: MergeConfig) -> str:
    return runkey.run_key({"parts": [p.image_set.attrs.get("content_hash") for p in parts],
                           "site_names": list(config.site_names or []), "allow_mixed": bool(config.allow_mixed)})


def _summary_from_attrs(output: Path, attrs: dict[str, Any]) -> dict[str, Any]:
    """What an up-to-date rerun reports (AlreadyDone), read from the existing output."""
    return {"output": str(output), "kind": attrs.get("kind"), "images": attrs.get("n"),
            "sites": attrs.get("sites"), "content_hash": attrs.get("content_hash")}


def run(config: MergeConfig) -> dict[str, Any]:
    """Merge ``config.inputs`` into ``config.output``; return a JSON-able summary.

    Raises
    ------
    ConfigError
        Fewer than two inputs, bad ``--site-names``, no ``-o``, a mix of kinds without
        ``--allow-mixed``, an existing output from other parts (exit 2).
    DataMismatchError
        Parts that cannot share one image or intensity space, with the setting that differs (exit 2).
    StoreError
        An input that is not a medcondense file or was altered (exit 3).
    AlreadyDone
        The output was made from the same parts and options.
    """
    started = time.time()
    if not config.output:
        raise ConfigError("merge needs an output file: -o merged.h5")
    parts = read_parts(config)
    output = Path(config.output)
    run_key = _run_key(parts, config)
    runkey.skip_if_done(output, run_key, config.overwrite, runkey.hdf5_record(_summary_from_attrs))
    kind = output_kind(parts, config.allow_mixed)
    check_compatible(parts)
    merged, summary = build(parts, kind)
    from medcondense.provenance import make_provenance

    merged.attrs["provenance"] = make_provenance(
        stage="merge", config=config_to_dict(config), paths=[*config.inputs, config.output],
        input_hash=run_key, started=started,
        extra={"parts": [{"file": p.name, "content_hash": p.image_set.attrs.get("content_hash"),
                          "provenance": p.image_set.attrs.get("provenance")} for p in parts]},
    )
    merged.attrs["run_key"] = run_key
    digest = store.write(output, merged, overwrite=config.overwrite)
    return {
        "output": str(output), "kind": kind, "images": merged.n, "image_shape": list(merged.image_shape),
        "sites": summary["images_per_site"], "classes": summary["classes"], "absent": summary["absent"],
        "parts": [{"file": p.name, "kind": p.image_set.kind, "images": p.image_set.n,
                   "content_hash": p.image_set.attrs.get("content_hash")} for p in parts],
        "schema": store.schema_for(merged), "content_hash": digest, "seconds": round(time.time() - started, 2),
    }


def render(result: dict[str, Any], console: Any) -> None:
    """A summary table on stdout (rich)."""
    from rich.table import Table

    table = Table(title="medcondense merge", show_header=False)
    table.add_column("what")
    table.add_column("value")
    if result.get("skipped"):
        table.add_row("status", "up to date (nothing to do)")
    table.add_row("output", str(result.get("output")))
    for key in ("kind", "images", "image_shape"):
        if result.get(key) is not None:
            table.add_row(key, str(result[key]))
    sites = result.get("sites")
    if isinstance(sites, dict):
        table.add_row("sites", ", ".join(f"{k} {v}" for k, v in sites.items()))
    elif sites:
        table.add_row("sites", ", ".join(map(str, sites)))
    if result.get("classes"):
        table.add_row("classes", ", ".join(result["classes"]))
    for name, where in (result.get("absent") or {}).items():
        table.add_row("absent", f"{name} at {', '.join(where)}")
    for part in result.get("parts") or []:
        table.add_row("part", f"{part['file']}: {part['kind']}, {part['images']} images, {str(part['content_hash'])[:16]}")
    if result.get("content_hash"):
        table.add_row("content hash", str(result["content_hash"])[:16])
    console.print(table)

"""The data card: ``CARD.md`` for people and ``card.json`` for programs.

It says what the set is (synthetic, or real images), where it came from (counts, classes,
preprocessing; never a path, series or patient key), how it was made (method, hyper-parameters,
provenance), how good it is (evaluate and score results found in the file or given with
``--report``), what the privacy audit found, and under which licence and for what use it is shared.

Reports are read tolerantly, because evaluate and score may change their layout: every numeric
leaf of the JSON becomes a row ``dotted.key.path = value`` (lists of up to
:data:`MAX_LIST` numbers are kept, longer ones are summarised by their mean; up to
:data:`MAX_LIST` records are labelled by their ``name``/``method``/``path`` key (else their
index), longer lists of records give the mean and max of each field as ``list[*].field.max``). Rows whose path mentions one of
:data:`PRIVACY_WORDS` form the privacy audit section.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medcondense import store
from medcondense.export.context import ExportContext, FormatResult

log = logging.getLogger(__name__)

FOLDER = "."
CHANNELS = None
CARD_MD = "CARD.md"
CARD_JSON = "card.json"
MAX_LIST = 8
MAX_ROWS_MD = 60
MD_HIDDEN = ("provenance", "versions")  # path parts left out of CARD.md tables (kept in card.json)
PRIVACY_WORDS = ("privacy", "copies", "copy", "audit", "nearest", "memoriz", "ssim", "leak")
# attributes of a medcondense file that may hold results written by evaluate or score
RESULT_ATTRS = ("evaluation", "evaluate", "score", "scores", "privacy", "privacy_audit", "audit")
LABEL_KEYS = ("name", "method", "set", "path", "file", "model", "arch")
PROVENANCE_KEYS = ("stage", "tool_version", "created", "seed", "device", "wall_time_s", "input_hash", "versions")

DEFAULT_LICENSE = (
    "not set: choose a licence compatible with the source data's terms and data-use agreement "
    "before sharing (medcondense export --license)"
)
INTENDED_USE_SYNTHETIC = (
    "Training and benchmarking machine-learning models, teaching, and sharing a compact training "
    "set where the privacy audit allows. Not for diagnosis or any clinical decision; not a "
    "substitute for real data when validating a model."
)
INTENDED_USE_REAL = (
    "Inspection and model development inside the governance of the source data: these are real "
    "patient images with identifiers removed, not synthetic data, and may only be shared as the "
    "source data may."
)


def export(ctx: ExportContext, root: Path) -> FormatResult:
    """Write ``root/CARD.md`` and ``root/card.json``."""
    card = build_card(ctx)
    root.mkdir(parents=True, exist_ok=True)
    (root / CARD_JSON).write_text(json.dumps(card, indent=2, default=str) + "\n", encoding="utf-8")
    (root / CARD_MD).write_text(render_markdown(card), encoding="utf-8")
    return FormatResult(FOLDER, 2, [] if card["results"] else ["no evaluate/score results found (pass --report)"])


# --------------------------------------------------------------------------- content


def build_card(ctx: ExportContext) -> dict[str, Any]:
    """The card as a JSON-able dict (``card.json``); :func:`render_markdown` formats it."""
    s = ctx.image_set
    results = {src: {k: v for k, v in rows.items() if not is_mia_key(k)}
               for src, rows in collect_results(s.attrs, ctx.reports).items()}
    privacy = {src: {k: v for k, v in rows.items() if is_privacy_key(k)} for src, rows in results.items()}
    privacy = {src: rows for src, rows in privacy.items() if rows}
    return {
        "title": f"Data card: {ctx.input_name}",
        "kind": s.kind,
        "synthetic": ctx.is_synthetic,
        "statement": _statement(ctx),
        "summary": {
            "images": s.n,
            "classes": s.num_classes,
            "image_shape_chw": list(s.image_shape),
            "modality": s.attrs.get("modality", ""),
            "laterality_matters": s.attrs.get("laterality"),
            "method": ctx.method,
            "ipc": s.attrs.get("ipc"),
            "content_hash": ctx.digest,
            "source_hash": s.attrs.get("source_hash"),
        },
        "classes": class_counts(s),
        "source": {
            "preprocessing": s.attrs.get("preprocessing") or {},
            "normalization_method": (s.attrs.get("normalization") or {}).get("method"),
            "exported_values": ctx.intensity.description,
            "phi": _phi_statement(s),
        },
        "method": {
            "name": ctx.method,
            "ipc": s.attrs.get("ipc"),
            "hyperparameters": s.attrs.get("hyperparameters") or {},
            "provenance": _provenance_summary(s.attrs.get("provenance")),
        },
        "results": results,
        "privacy_audit": privacy,
        "membership_inference": membership_inference(ctx.reports),
        "differential_privacy": differential_privacy(s),
        "license": ctx.license or DEFAULT_LICENSE,
        "intended_use": INTENDED_USE_SYNTHETIC if ctx.is_synthetic else INTENDED_USE_REAL,
        "files": {name: r.to_dict() for name, r in ctx.results.items()},
    }


def _statement(ctx: ExportContext) -> str:
    s = ctx.image_set
    if ctx.is_synthetic:
        return (f"SYNTHETIC images made by dataset distillation ({ctx.method}, "
                f"{s.attrs.get('ipc', '?')} images per class) from a real data set. No image is a patient's image; "
                "see the privacy audit for how close any comes to a real training image.")
    if s.kind == "mixed":
        sites = ", ".join(s.attrs.get("sites") or []) or "several sites"
        return (f"MIXED: {s.n} images merged from {sites}, some of them REAL patient images and some synthetic "
                "(`medcondense merge --allow-mixed`). The set is treated as real data throughout; "
                "identifiers were removed on export.")
    if s.kind == "subset":
        return (f"REAL patient images: a coreset of {s.n} images picked by {ctx.method} from a real data set. "
                "These are not synthetic. Identifiers were removed on export.")
    return f"REAL patient images: an ingested data set of {s.n} images. Identifiers were removed on export."


def _phi_statement(s: store.ImageSet) -> str:
    held = sorted(set(s.meta) & set(store.IDENTIFYING_META))
    burned = int(s.attrs.get("burned_in_images", 0) or 0)
    if s.kind == "synthetic" and not burned:
        text = ("The export carries no protected health information: no DICOM attribute of the source is "
                "copied, UIDs are new, patient name and ID are placeholders.")
    else:
        text = ("No DICOM attribute of the source is copied, UIDs are new, patient name and ID are "
                "placeholders; the pixel data were not checked for burned-in text or recognizable "
                "features, so the export does not claim that the patients' identity is removed.")
    if burned:
        text += (f" {burned} source image(s) were flagged BurnedInAnnotation or RecognizableVisualFeatures "
                 "YES and kept (--allow-burned-in): names or faces may be visible.")
    if held:
        text += f" The input file holds per-image {', '.join(held)}; none of them is exported."
    return text


def class_counts(s: store.ImageSet) -> list[dict[str, Any]]:
    """Per class: name and image count per split."""
    rows = []
    for k, name in enumerate(s.class_names):
        row: dict[str, Any] = {"class": name}
        for code, split in store.SPLIT_NAMES.items():
            row[split] = int(((s.labels == k) & (s.split == code)).sum())
        rows.append(row)
    return rows


def _provenance_summary(provenance: Any) -> dict[str, Any]:
    if not isinstance(provenance, dict):
        return {}
    return {k: provenance[k] for k in PROVENANCE_KEYS if k in provenance}


# --------------------------------------------------------------------------- reports


def collect_results(attrs: dict[str, Any], reports: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Numeric summaries by source: results stored in the file's attributes, then each report."""
    out: dict[str, dict[str, float]] = {}
    for name in RESULT_ATTRS:
        if name in attrs:
            rows = flatten_numbers(attrs[name])
            if rows:
                out[f"file attribute {name}"] = rows
    for source, report in reports.items():
        rows = flatten_numbers(report)
        if rows:
            out[source] = rows
        else:
            log.warning("%s: no numeric results found in the report", source)
    return out


def flatten_numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a JSON value as ``{"a.b[0].c": number}`` (see the module docstring)."""
    rows: dict[str, float] = {}
    if isinstance(value, bool):
        rows[prefix or "value"] = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if np.isfinite(value):
            rows[prefix or "value"] = value
    elif isinstance(value, dict):
        for key, item in value.items():
            rows.update(flatten_numbers(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        rows.update(_flatten_list(value, prefix))
    return rows


def _flatten_list(items: list[Any], prefix: str) -> dict[str, float]:
    numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if items and len(numbers) == len(items):
        if len(items) <= MAX_LIST:
            return {f"{prefix}[{i}]": v for i, v in enumerate(items)}
        return {f"{prefix}.mean_of_{len(items)}": float(np.mean(items))}
    if len(items) > MAX_LIST:
        return _summarise_items(items, prefix)
    rows: dict[str, float] = {}
    for i, item in enumerate(items):
        label = next((str(item[k]) for k in LABEL_KEYS if isinstance(item, dict) and isinstance(item.get(k), str)), str(i))
        rows.update(flatten_numbers(item, f"{prefix}[{label}]"))
    return rows


def _summarise_items(items: list[Any], prefix: str) -> dict[str, float]:
    """A long list of records (one per image, say): mean and max of each numeric field."""
    columns: dict[str, list[float]] = {}
    for item in items:
        for key, value in flatten_numbers(item, f"{prefix}[*]").items():
            columns.setdefault(key, []).append(float(value))
    rows: dict[str, float] = {}
    for key, values in columns.items():
        rows[f"{key}.mean"] = float(np.mean(values))
        rows[f"{key}.max"] = float(np.max(values))
    return rows


#: what the card copies from a score report's membership audit (``syn.privacy.mia.<attack>.<artefact>``)
MIA_FIELDS = ("auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci", "tpr_at_0.1pct_fpr", "tpr_at_0.1pct_fpr_ci",
              "advantage", "members", "nonmembers")
DP_FIELDS = ("epsilon", "delta", "epsilon_spent", "noise_multiplier", "clip", "unit", "queries", "accountant",
             "opacus_version")


def is_mia_key(key: str) -> bool:
    """Whether a flattened key is part of a membership audit (copied selectively, not as raw rows)."""
    return ".mia." in key or key.startswith("mia.") or ".mia_" in key


def membership_inference(reports: dict[str, Any]) -> dict[str, Any]:
    """Per report: ``{attack: {artefact: {MIA_FIELDS}}}`` and the noise-floor verdict; nothing else."""
    out: dict[str, Any] = {}
    for source, report in reports.items():
        privacy = ((report.get("syn") or {}).get("privacy") or {}) if isinstance(report, dict) else {}
        mia = privacy.get("mia") if isinstance(privacy, dict) else None
        if not isinstance(mia, dict):
            continue
        attacks = {attack: {artefact: {k: block[k] for k in MIA_FIELDS if k in block}
                            for artefact, block in per.items() if isinstance(block, dict)}
                   for attack, per in mia.items() if isinstance(per, dict)}
        entry: dict[str, Any] = {"attacks": attacks}
        verdict = privacy.get("mia_exchangeable")
        if isinstance(verdict, dict):
            entry["exchangeable"] = bool(verdict.get("exchangeable"))
            if verdict.get("note"):
                entry["note"] = str(verdict["note"])
        out[source] = entry
    return out


def differential_privacy(s: store.ImageSet) -> dict[str, Any]:
    """The file's ``dp`` attribute, or a plain statement that the set has no formal guarantee."""
    dp = s.attrs.get("dp")
    if isinstance(dp, dict):
        return {"guarantee": True, **{k: dp[k] for k in DP_FIELDS if k in dp},
                "statement": (f"Distilled with differential privacy: ({dp.get('epsilon')}, {dp.get('delta')})-DP "
                              f"per {dp.get('unit', 'unit')} of the source train split "
                              f"(epsilon spent {dp.get('epsilon_spent')}, accountant {dp.get('accountant')}).")}
    if s.kind == "synthetic":
        return {"guarantee": False,
                "statement": ("Distilled from real images WITHOUT differential privacy: there is no formal "
                              "privacy guarantee. A membership-inference audit (score --mia) measures what "
                              "known attacks achieve; it cannot prove that no attack succeeds.")}
    return {"guarantee": False, "statement": "Real images: no privacy guarantee applies."}


def is_privacy_key(key: str) -> bool:
    """Whether a flattened key belongs to the privacy audit."""
    low = key.lower()
    return any(word in low for word in PRIVACY_WORDS)


# --------------------------------------------------------------------------- markdown


def render_markdown(card: dict[str, Any]) -> str:
    """``CARD.md`` from the card dict."""
    lines = [f"# {card['title']}", "", f"> **{card['statement']}**", ""]
    lines += _section_summary(card)
    lines += _section_classes(card)
    lines += _section_source(card)
    lines += _section_method(card)
    lines += _section_results(card)
    lines += _section_privacy(card)
    lines += _section_membership(card)
    lines += ["## Licence and intended use", "", f"- Licence: {card['license']}",
              f"- Intended use: {card['intended_use']}", ""]
    lines += _section_files(card)
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return out + [""]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, default=str)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _section_summary(card: dict[str, Any]) -> list[str]:
    rows = [[k.replace("_", " "), v] for k, v in card["summary"].items() if v not in (None, "")]
    return ["## Summary", ""] + _table(["", ""], [["kind", card["kind"]], *rows])


def _section_classes(card: dict[str, Any]) -> list[str]:
    rows = [[c["class"], c["train"], c["val"], c["test"]] for c in card["classes"]]
    return ["## Classes", ""] + _table(["class", "train", "val", "test"], rows)


def _section_source(card: dict[str, Any]) -> list[str]:
    src = card["source"]
    lines = ["## Source and preprocessing", "", f"- Normalization: {src['normalization_method'] or 'unknown'}",
             f"- Exported values: {src['exported_values']}", f"- Privacy: {src['phi']}", ""]
    pre = src["preprocessing"]
    if pre:
        lines += _table(["preprocessing", "value"], [[k, v] for k, v in sorted(pre.items())])
    return lines


def _section_method(card: dict[str, Any]) -> list[str]:
    m = card["method"]
    lines = ["## Method and hyper-parameters", "", f"- Method: {m['name']}"]
    if m["ipc"] is not None:
        lines.append(f"- Images per class: {m['ipc']}")
    lines.append("")
    if m["hyperparameters"]:
        lines += _table(["hyper-parameter", "value"], [[k, v] for k, v in sorted(m["hyperparameters"].items())])
    if m["provenance"]:
        lines += _table(["provenance", "value"], [[k, v] for k, v in m["provenance"].items()])
    return lines


def _rows_md(rows: dict[str, float]) -> list[list[Any]]:
    # the report's own provenance is run bookkeeping, not a result: card.json keeps it
    items = [(k, v) for k, v in rows.items() if not any(part in MD_HIDDEN for part in k.split("."))]
    shown = [[k, v] for k, v in items[:MAX_ROWS_MD]]
    if len(items) > MAX_ROWS_MD:
        shown.append([f"... {len(items) - MAX_ROWS_MD} more rows", "see card.json"])
    return shown


def _section_results(card: dict[str, Any]) -> list[str]:
    lines = ["## Evaluation and scores", ""]
    if not card["results"]:
        return lines + ["No results found in the file or given with `--report` "
                        "(run `medcondense evaluate SYN -o report.json` and export with `--report report.json`).", ""]
    for source, rows in card["results"].items():
        lines += [f"### {source}", ""] + _table(["key", "value"], _rows_md(rows))
    return lines


def _section_privacy(card: dict[str, Any]) -> list[str]:
    lines = ["## Privacy audit", ""]
    if not card["privacy_audit"]:
        return lines + ["No privacy audit found (run `medcondense score DATA SYN -o score.json` and export with "
                        "`--report score.json`)." if card["synthetic"] else
                        "Not applicable: these are real images; no privacy audit can make them shareable.", ""]
    for source, rows in card["privacy_audit"].items():
        lines += [f"### {source}", ""] + _table(["key", "value"], _rows_md(rows))
    return lines


def _ci_text(block: dict[str, Any], key: str) -> str:
    value = block.get(key)
    if value is None:
        return "-"
    ci = block.get(f"{key}_ci")
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, list) and len(ci) == 2 else "")


def _section_membership(card: dict[str, Any]) -> list[str]:
    dp = card.get("differential_privacy") or {}
    lines = ["## Differential privacy and membership inference", "", f"- {dp.get('statement', '')}", ""]
    if dp.get("guarantee"):
        lines += _table(["DP setting", "value"], [[k, dp[k]] for k in DP_FIELDS if k in dp])
    for source, entry in (card.get("membership_inference") or {}).items():
        lines += [f"### Membership inference: {source}", ""]
        if entry.get("exchangeable") is False:
            lines += [f"- {entry.get('note', 'splits not exchangeable')}: the audit cannot judge this set.", ""]
        rows = []
        for attack, per in entry["attacks"].items():
            for artefact, block in per.items():
                rows.append([attack, artefact, _ci_text(block, "auc"), _ci_text(block, "tpr_at_1pct_fpr"),
                             block.get("advantage", "-"), f"{block.get('members', '-')} / {block.get('nonmembers', '-')}"])
        lines += _table(["attack", "artefact", "AUC [95% CI]", "TPR at 1% FPR [95% CI]", "advantage",
                         "members / non-members"], rows)
    return lines


def _section_files(card: dict[str, Any]) -> list[str]:
    rows = [[name, r["folder"], r["files"], "; ".join(r["notes"])] for name, r in card["files"].items()]
    return ["## Files", ""] + _table(["format", "folder", "files", "notes"], rows) if rows else []

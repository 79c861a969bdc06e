"""Predicted gain of distillation over a random real subset, from a shipped calibration.

The model is deliberately small: per IPC, a least-squares line ``gain = coef . features +
intercept`` over measured (data set, IPC) pairs, where ``gain`` is distilled-set test accuracy
minus random-subset test accuracy (accuracy as a fraction) and the default feature is
``random_rel``, the paper's indicator (random-subset accuracy / full-data accuracy). With a
handful of data sets anything richer would only fit noise. How good it is, is measured and
shipped with it: ``loo_mae`` is the leave-one-dataset-out mean absolute error, and
``loo_mae_constant`` the same for always predicting the mean gain of the other data sets (the
model is only worth reading where it beats that).

Calibration file (``medcondense-calibration/1``)::

    {"schema": "medcondense-calibration/1", "features": ["random_rel"], "target": "...",
     "per_ipc": {"1": {"coef": [..], "intercept": x, "loo_mae": y, "n_datasets": k}, ...},
     "source": "where the numbers come from",
     "measured": [{"dataset": ..., "ipc": ..., "features": {...}, "gain": ...}, ...]}

``medcondense score --calibrate results.json ... -o calibration.json`` refits it from benchmark
results (``benchmarks/indicator.py`` writes a ``measured`` list in this shape).

Two indicators (``score --indicator``): ``full`` is the model above (its feature needs short
training runs: minutes); ``fast`` is a second model in ``"indicators": {"fast": {"features",
"per_ipc", "source"}}`` whose feature is a training-free proxy measured in random ConvNets
(seconds). The fast feature was chosen by the indicator study (the candidate with the lowest
leave-one-dataset-out error over the measured rows, :data:`FAST_FEATURES`); its ``loo_mae`` is the
error ``score`` states. A calibration without the block has no fast model (score says so).
"""

from __future__ import annotations

import json
import logging
import math
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from medcondense.atomic import write_json
from medcondense.errors import ConfigError

log = logging.getLogger(__name__)

CALIBRATION_SCHEMA = "medcondense-calibration/1"
DEFAULT_FEATURES = ["random_rel"]
#: the fast indicator's feature: a k-NN accuracy in random-ConvNet embeddings, no training
#: (chosen by benchmarks/indicator.py's candidates; docs/score.md)
FAST_FEATURES = ["knn_accuracy"]
INDICATORS = ("fast", "full")
TARGET = "gain = distilled accuracy - random-subset accuracy (fraction), best of the measured methods"
REQUIRED_KEYS = ("schema", "features", "per_ipc", "source", "measured")
REQUIRED_IPC_KEYS = ("coef", "intercept", "loo_mae", "n_datasets")
REQUIRED_MEASURED_KEYS = ("dataset", "ipc", "features", "gain")


def shipped_calibration_path() -> Path:
    """The calibration file shipped inside the package (``medcondense/data/calibration.json``)."""
    return Path(str(resources.files("medcondense").joinpath("data/calibration.json")))


def _require(mapping: Any, keys: tuple[str, ...], where: str, path: str | Path) -> None:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a JSON object", path=path)
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ConfigError(f"{where} is missing the key {', '.join(repr(k) for k in missing)}", path=path)


def validate_calibration(data: Any, path: str | Path) -> dict:
    """Check a calibration's schema; raise ConfigError naming ``path`` and what is wrong."""
    _require(data, REQUIRED_KEYS, "the calibration", path)
    if data["schema"] != CALIBRATION_SCHEMA:
        raise ConfigError(f"schema is {data['schema']!r}, expected {CALIBRATION_SCHEMA!r}", path=path)
    features = data["features"]
    if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
        raise ConfigError("'features' must be a non-empty list of feature names", path=path)
    if not isinstance(data["per_ipc"], dict):
        raise ConfigError("'per_ipc' must map an IPC to its model", path=path)
    for ipc, model in data["per_ipc"].items():
        _require(model, REQUIRED_IPC_KEYS, f"per_ipc[{ipc!r}]", path)
        if not str(ipc).isdigit():
            raise ConfigError(f"per_ipc key {ipc!r} is not an IPC (a positive integer)", path=path)
        if not isinstance(model["coef"], list) or len(model["coef"]) != len(features):
            raise ConfigError(f"per_ipc[{ipc!r}].coef must hold {len(features)} number(s), one per feature", path=path)
    if not isinstance(data["measured"], list):
        raise ConfigError("'measured' must be a list", path=path)
    for i, row in enumerate(data["measured"]):
        _require(row, REQUIRED_MEASURED_KEYS, f"measured[{i}]", path)
    for name, block in (data.get("indicators") or {}).items():
        _require(block, ("features", "per_ipc"), f"indicators[{name!r}]", path)
        validate_calibration({**data, **block, "indicators": {}}, path)
    return data


def model_for(calibration: dict, indicator: str) -> dict | None:
    """The calibration block of ``indicator`` (``full``: the top level), or None when absent."""
    if indicator == "full":
        return calibration
    return (calibration.get("indicators") or {}).get(indicator)


def load_calibration(path: str | Path | None = None) -> tuple[dict, Path]:
    """Read and validate a calibration (the shipped one when ``path`` is None)."""
    path = Path(path) if path else shipped_calibration_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the calibration ({exc.strerror})", path=path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the calibration is not valid JSON ({exc.msg}, line {exc.lineno})", path=path) from None
    return validate_calibration(data, path), path


def _nearest_ipc(per_ipc: dict, ipc: int) -> str | None:
    """The calibrated IPC closest to ``ipc`` on a log scale (IPC effects are multiplicative)."""
    if not per_ipc:
        return None
    return min(per_ipc, key=lambda k: (abs(math.log(int(k)) - math.log(ipc)), int(k)))


def predict_gain(calibration: dict, ipc: int, features: dict[str, float], indicator: str = "full") -> dict:
    """Predicted gain at ``ipc`` with its leave-one-dataset-out error, or a note why there is none.

    ``indicator`` picks the model (:func:`model_for`): ``full`` (the top level) or ``fast``.
    """
    provisional = bool(calibration.get("provisional", False))
    measured = calibration.get("measured") or []
    block = model_for(calibration, indicator)
    if block is None:
        return {"gain": None, "note": f"the calibration has no {indicator!r} model (use --indicator full)"}
    calibration = block
    key = _nearest_ipc(calibration["per_ipc"], ipc)
    if key is None:
        return {"gain": None, "note": "the calibration has no fitted IPC"}
    model = calibration["per_ipc"][key]
    values = [features.get(name) for name in calibration["features"]]
    if any(v is None or not math.isfinite(v) for v in values):
        return {"gain": None, "note": f"missing feature(s) {', '.join(calibration['features'])}"}
    gain = float(np.dot(model["coef"], values) + model["intercept"])
    out = {
        "gain": round(gain, 4),
        "loo_mae": model["loo_mae"],
        "loo_mae_constant": model.get("loo_mae_constant"),
        "n_datasets": model["n_datasets"],
        "ipc_used": int(key),
        "indicator": indicator,
        "features": {name: round(float(v), 6) for name, v in zip(calibration["features"], values)},
        "provisional": bool(calibration.get("provisional", provisional)),
    }
    notes = [f"no calibration at IPC {ipc}; used the nearest, IPC {key}"] if int(key) != ipc else []
    outside = _outside_range(measured, int(key), dict(zip(calibration["features"], values)))
    if outside:
        out["extrapolated"] = True  # the stated error was measured inside the range only
        notes.append("outside the calibrated range: " + "; ".join(outside))
    if notes:
        out["note"] = "; ".join(notes)
    return out


def _outside_range(measured: list[dict], ipc: int, values: dict[str, float]) -> list[str]:
    """``name value not in [low, high]`` for each feature outside the values measured at ``ipc``."""
    out = []
    for name, value in values.items():
        seen = [float(r["features"][name]) for r in measured
                if int(r["ipc"]) == ipc and r["features"].get(name) is not None]
        if seen and not min(seen) <= value <= max(seen):
            out.append(f"{name} {value:.3f} not in [{min(seen):.3f}, {max(seen):.3f}]")
    return out


def _lstsq(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    design = np.hstack([x, np.ones((x.shape[0], 1))])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    return solution[:-1], float(solution[-1])


def _fit_one_ipc(rows: list[dict], features: list[str]) -> dict | None:
    """Fit one IPC's line and its leave-one-dataset-out errors; None with too few data sets."""
    datasets = np.array([r["dataset"] for r in rows])
    x = np.array([[float(r["features"][f]) for f in features] for r in rows])
    y = np.array([float(r["gain"]) for r in rows])
    names = sorted(set(datasets))
    if len(names) < len(features) + 2:
        return None
    errors, const_errors = [], []
    for name in names:
        held = datasets == name
        coef, icpt = _lstsq(x[~held], y[~held])
        errors.extend(np.abs(x[held] @ coef + icpt - y[held]))
        const_errors.extend(np.abs(y[~held].mean() - y[held]))
    coef, icpt = _lstsq(x, y)
    return {
        "coef": [round(float(c), 6) for c in coef],
        "intercept": round(icpt, 6),
        "loo_mae": round(float(np.mean(errors)), 6),
        "loo_mae_constant": round(float(np.mean(const_errors)), 6),
        "n_datasets": len(names),
    }


def fit_calibration(measured: list[dict], features: list[str] | None = None, source: str = "") -> dict:
    """Fit the per-IPC models from measured rows ``{dataset, ipc, features, gain}``."""
    features = features or list(DEFAULT_FEATURES)
    usable = [r for r in measured if all(r["features"].get(f) is not None for f in features) and r.get("gain") is not None]
    per_ipc = {}
    for ipc in sorted({int(r["ipc"]) for r in usable}):
        model = _fit_one_ipc([r for r in usable if int(r["ipc"]) == ipc], features)
        if model is None:
            log.warning("IPC %d: fewer than %d data sets measured; no model fitted", ipc, len(features) + 2)
            continue
        per_ipc[str(ipc)] = model
    return {
        "schema": CALIBRATION_SCHEMA,
        "features": features,
        "target": TARGET,
        "per_ipc": per_ipc,
        "source": source,
        "measured": measured,
    }


def _measured_rows(path: Path) -> list[dict]:
    """The ``measured`` rows of a benchmark result or calibration file, validated."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read ({exc.strerror})", path=path) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON ({exc.msg}, line {exc.lineno})", path=path) from None
    _require(data, ("measured",), "a benchmark result", path)
    if not isinstance(data["measured"], list):
        raise ConfigError("'measured' must be a list", path=path)
    for i, row in enumerate(data["measured"]):
        _require(row, REQUIRED_MEASURED_KEYS, f"measured[{i}]", path)
    return data["measured"]


def calibrate(result_paths: list[str | Path], output: str | Path) -> dict:
    """Refit the calibration from benchmark result files and write it atomically to ``output``."""
    paths = [Path(p) for p in result_paths]
    measured = [row for p in paths for row in _measured_rows(p)]
    source = (f"refit by `medcondense score --calibrate` from {', '.join(p.name for p in paths)} "
              f"on {time.strftime('%Y-%m-%d')}")
    calibration = fit_calibration(measured, source=source)
    fast = fit_calibration(measured, FAST_FEATURES, source=source)
    if fast["per_ipc"]:
        calibration["indicators"] = {"fast": {k: fast[k] for k in ("features", "per_ipc", "source")}}
    if not calibration["per_ipc"]:
        raise ConfigError(
            f"no IPC has measurements from at least {len(DEFAULT_FEATURES) + 2} data sets; nothing to fit",
            path=paths[0],
        )
    write_json(output, calibration)
    return calibration

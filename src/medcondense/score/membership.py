"""The membership-inference audit of ``score DATA SYN``: who plays, which attacks, on which artefacts.

The game (docs/score.md): members are the real train images the set was distilled from,
non-members the real images of ``--mia-nonmembers`` (val and/or test: split by patient at ingest,
never used by distill). The unit is the patient when the file records ``patient_key`` (their score
is the max over their images), else the image (``--mia-unit``).

Artefacts, so that a number can be read against what it would be anyway:

* ``synthetic``: the set under audit;
* ``random``: a random real subset of the train split with the same images per class (the naive
  thing to share instead; what distillation must beat);
* ``noise``: Gaussian noise of the same size (the floor: nothing to learn from it; if an attack
  still separates the splits with it, members and non-members differ in kind, e.g. another
  hemisphere, and the game cannot be judged: "splits not exchangeable");
* ``full`` (``loss``/``lira`` only): models trained on the whole train split (the ceiling).

Attacks (:mod:`medcondense.score.mia` has the maths): ``set_distance`` always (pixel space and the
random-ConvNet embedding of the near-copy audit; the headline is the space with the higher AUC),
``loss`` with ``--mia`` (``--mia-models`` K models trained on the artefact with evaluate's
protocol), ``lira`` with ``--mia-shadows N`` (N distillations on random halves of members and
non-members; benchmark-grade).

Signals of the ``random``, ``noise`` and ``full`` artefacts depend only on the real file and the
options, so they are cached beside the real file (evaluate's baseline cache) and computed once.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from medcondense import store
from medcondense.errors import ConfigError, NoUsableInputError
from medcondense.score import mia

log = logging.getLogger(__name__)

NONMEMBER_SPLITS = {"val": store.SPLIT_VAL, "test": store.SPLIT_TEST}
UNITS = ("auto", "patient", "image")
#: the parts of a cached signal's key that describe the synthetic set (the full model's signal depends on none)
SYNTHETIC_KEYS = ("ipc", "n_syn", "nets")
SIGNAL_VERSION = 1  # bump when a signal's computation changes: old cache entries then miss


@dataclass
class MIASettings:
    """The audit's options (``score --mia*``)."""

    loss: bool = False
    models: int = 2
    shadows: int = 0
    nonmembers: list[str] = field(default_factory=lambda: ["val", "test"])
    unit: str = "auto"
    epochs: int = 300
    full_steps: int = 1000
    train_aug: str = "none"
    bootstrap: int = mia.BOOTSTRAP_SAMPLES
    seed: int = 0


def check_settings(settings: MIASettings) -> None:
    """ConfigError (exit 2) for audit options that cannot work."""
    bad = [s for s in settings.nonmembers if s not in NONMEMBER_SPLITS]
    if bad or not settings.nonmembers:
        raise ConfigError(f"--mia-nonmembers {','.join(settings.nonmembers)!r}: expected val, test or val,test")
    if settings.unit not in UNITS:
        raise ConfigError(f"--mia-unit {settings.unit!r}: expected one of patient, image")
    if isinstance(settings.models, bool) or not isinstance(settings.models, int) or settings.models < 1:
        raise ConfigError(f"--mia-models {settings.models!r}: expected a whole number >= 1")
    if settings.shadows and (settings.shadows < 4 or settings.shadows % 2):
        raise ConfigError(f"--mia-shadows {settings.shadows}: LiRA needs an even number >= 4 (or 0 for none)")


# --------------------------------------------------------------------------- the players


@dataclass
class Game:
    """Members and non-members: images standardized, labels, unit ids, their split of origin."""

    x: torch.Tensor
    y: np.ndarray
    member: np.ndarray  # bool per image
    units: np.ndarray | None  # unit id per image, None = image units
    unit_kind: str
    nonmember_splits: list[str]

    def unit_split(self, image_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit scores of members and of non-members."""
        units = None if self.units is None else self.units[self.member]
        members = mia.unit_scores(image_scores[self.member], units)
        units = None if self.units is None else self.units[~self.member]
        return members, mia.unit_scores(image_scores[~self.member], units)

    def describe(self) -> dict[str, Any]:
        n_m, n_n = self.unit_split(np.zeros(self.member.size))
        return {"members": int(n_m.size), "nonmembers": int(n_n.size), "unit": self.unit_kind,
                "nonmember_splits": self.nonmember_splits, "member_images": int(self.member.sum()),
                "nonmember_images": int((~self.member).sum())}


def build_game(real: store.ImageSet, settings: MIASettings, mean: np.ndarray, std: np.ndarray, path: str) -> Game:
    """The players from the real file; NoUsableInputError (exit 3) below 20 non-member units."""
    from medcondense.train import standardize

    nonmember_codes = [NONMEMBER_SPLITS[s] for s in settings.nonmembers]
    member = real.split == store.SPLIT_TRAIN
    chosen = member | np.isin(real.split, nonmember_codes)
    patients = real.meta.get("patient_key")
    has_patients = patients is not None and len(patients) and all(str(p) for p in patients)
    unit_kind = settings.unit if settings.unit != "auto" else ("patient" if has_patients else "image")
    if unit_kind == "patient" and not has_patients:
        raise ConfigError("--mia-unit patient: the file records no patient_key for its images", path=path)
    subset = real.select(chosen)
    units = np.asarray([str(p) for p in subset.meta["patient_key"]]) if unit_kind == "patient" else None
    game = Game(x=standardize(subset.images, mean, std), y=subset.labels, member=subset.split == store.SPLIT_TRAIN,
                units=units, unit_kind=unit_kind, nonmember_splits=list(settings.nonmembers))
    counts = game.describe()
    if counts["nonmembers"] < mia.MIN_NONMEMBER_UNITS:
        raise NoUsableInputError(
            f"the membership audit needs at least {mia.MIN_NONMEMBER_UNITS} non-member {unit_kind} units in "
            f"{'+'.join(settings.nonmembers)}, the file has {counts['nonmembers']}", path=path)
    if counts["members"] < 1:
        raise NoUsableInputError("the membership audit needs train images (the members)", path=path)
    return game


# --------------------------------------------------------------------------- artefacts


def random_artefact(real_train_y: np.ndarray, ipc: int, seed: int) -> np.ndarray:
    """Rows of the train split forming the same-IPC random real subset."""
    from medcondense.evaluate.baselines import random_subset

    return random_subset(real_train_y, ipc, seed)


def noise_artefact(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal images (standardized units), one per given label."""
    return torch.randn((labels.size, *shape), generator=torch.Generator().manual_seed(seed + 104729))


# --------------------------------------------------------------------------- signals


def set_distance_signal(game: Game, syn_x: torch.Tensor, syn_y: np.ndarray, nets: list, centre_pixel: torch.Tensor,
                        centres_emb: list[torch.Tensor], embed: Callable) -> dict[str, np.ndarray]:
    """Per-image set-distance scores of every candidate, in pixel space and in the embedding."""
    device = syn_x.device
    cand = game.x.to(device)
    pixel = mia.set_distance_scores(cand.flatten(1), game.y, syn_x.flatten(1), syn_y, centre_pixel)
    sims = None
    for net, centre in zip(nets, centres_emb):
        c = torch.nn.functional.normalize(embed(net, cand) - centre, dim=1)
        s = torch.nn.functional.normalize(embed(net, syn_x) - centre, dim=1)
        sim = c @ s.T
        sims = sim if sims is None else sims + sim
    sims = sims / len(nets)
    emb = np.full(cand.shape[0], -1.0)
    ys, yc = torch.as_tensor(syn_y), torch.as_tensor(game.y)
    for k in torch.unique(yc).tolist():
        rows, cols = (yc == k), (ys == k)
        if cols.any():
            emb[rows.numpy()] = sims[rows.to(device)][:, cols.to(device)].max(dim=1).values.cpu().numpy()
    return {"pixel": pixel, "embedding": emb}


def train_models(x: torch.Tensor, y: np.ndarray, num_classes: int, models: int, epochs: int, seed: int,
                 device: torch.device, train_aug: str, laterality: bool) -> list:
    """``models`` fresh ConvNets trained with evaluate's protocol (model k seeded ``seed + k``)."""
    from medcondense.evaluate.protocol import train_augment
    from medcondense.nets import build_net
    from medcondense.train import TrainSettings, train_classifier

    augment = train_augment(train_aug, laterality)
    tx, ty = x.to(device), torch.as_tensor(y, dtype=torch.long, device=device)
    nets = []
    for k in range(models):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + k)
            net = build_net("convnet", x.shape[1], num_classes, x.shape[-1]).to(device)
        train_classifier(net, tx, ty, TrainSettings(epochs=epochs), augment=augment,
                         generator=torch.Generator().manual_seed(seed + k))
        nets.append(net)
    return nets


def loss_signal(game: Game, nets: list, device: torch.device) -> np.ndarray:
    """Per-image loss-attack scores: mean logit-scaled confidence over the models."""
    cand = game.x.to(device)
    return mia.loss_scores([mia.model_confidence(net, cand, game.y) for net in nets])


def full_epochs(n: int, settings: MIASettings) -> int:
    from medcondense.evaluate.baselines import full_baseline_epochs

    return full_baseline_epochs(n, settings.epochs, 256, settings.full_steps)


# --------------------------------------------------------------------------- the audit


@dataclass
class AuditInputs:
    """What the audit needs from score's run: the real file, the set, the shared embedding nets."""

    real: store.ImageSet
    real_path: str
    content_hash: str
    syn: store.ImageSet
    mean: np.ndarray
    std: np.ndarray
    nets: list
    embed: Callable
    device: torch.device
    laterality: bool = True
    cache: Any = None  # evaluate's BaselineCache (or None)
    shadow_distill: Callable | None = None  # (in_mask over game images, seed) -> (x_std, y); LiRA


def _blocks_for(game: Game, scores: np.ndarray, settings: MIASettings, seconds: float) -> dict[str, Any]:
    members, nonmembers = game.unit_split(scores)
    return mia.summarize(members, nonmembers, seed=settings.seed, samples=settings.bootstrap, seconds=seconds)


def _set_distance_block(game: Game, signal: dict[str, np.ndarray], settings: MIASettings, seconds: float) -> dict[str, Any]:
    by_space = {space: _blocks_for(game, s, settings, seconds) for space, s in signal.items()}
    worst = max(by_space, key=lambda s: by_space[s]["auc"])
    return {**by_space[worst], "space": worst, "by_space": by_space}


def _cached(inputs: AuditInputs, params: dict[str, Any], compute: Callable[[], dict[str, list[float]]]) -> tuple[dict[str, np.ndarray], bool]:
    """Per-image signals from the cache, or computed and stored."""
    if inputs.cache is not None:
        hit = inputs.cache.get(params)
        if hit is not None:
            return {k: np.asarray(v, dtype=np.float64) for k, v in hit.items()}, True
    value = compute()
    if inputs.cache is not None:
        inputs.cache.put(params, {k: [float(v) for v in np.asarray(a)] for k, a in value.items()})
    return {k: np.asarray(v, dtype=np.float64) for k, v in value.items()}, False


def run_audit(inputs: AuditInputs, settings: MIASettings, tick: Callable[[], None] | None = None) -> dict[str, Any]:
    """The whole audit; returns ``{"game": ..., "mia": {attack: {artefact: block}}, "exchangeability": ...}``."""
    from medcondense.train import standardize

    check_settings(settings)
    tick = tick or (lambda: None)
    real, device = inputs.real, inputs.device
    game = build_game(real, settings, inputs.mean, inputs.std, inputs.real_path)
    train = real.part(store.SPLIT_TRAIN)
    train_x = standardize(train.images, inputs.mean, inputs.std).to(device)
    centre_pixel = train_x.flatten(1).mean(dim=0)
    centres_emb = [inputs.embed(net, train_x).mean(dim=0, keepdim=True) for net in inputs.nets]
    syn_x = standardize(inputs.syn.images, inputs.mean, inputs.std).to(device)
    syn_y = np.asarray(inputs.syn.labels)
    ipc = int(np.bincount(syn_y).max())
    rand_rows = random_artefact(train.labels, ipc, settings.seed)
    artefacts = {
        "synthetic": (syn_x, syn_y),
        "random": (train_x[torch.as_tensor(rand_rows, device=device)], train.labels[rand_rows]),
        "noise": (noise_artefact(syn_y, tuple(syn_x.shape[1:]), settings.seed).to(device), syn_y),
    }
    base = {"what": "mia-signal", "version": SIGNAL_VERSION, "real": inputs.content_hash, "seed": settings.seed,
            "nonmembers": settings.nonmembers, "ipc": ipc, "n_syn": int(syn_y.size),
            "nets": len(inputs.nets)}
    report: dict[str, dict[str, Any]] = {"set_distance": {}}
    cached_any = {}
    for name, (ax, ay) in artefacts.items():
        start = time.perf_counter()
        compute = lambda ax=ax, ay=ay: set_distance_signal(game, ax, ay, inputs.nets, centre_pixel, centres_emb, inputs.embed)
        if name == "synthetic":
            signal, cached = compute(), False
        else:
            signal, cached = _cached(inputs, {**base, "attack": "set_distance", "artefact": name}, compute)
        report["set_distance"][name] = {**_set_distance_block(game, signal, settings, time.perf_counter() - start),
                                        "cached": cached}
        tick()
    if settings.loss or settings.shadows:
        report["loss"], target_conf = _loss_attack(inputs, settings, game, artefacts, train_x, train.labels, base, tick)
    if settings.shadows:
        report["lira"] = _lira_attack(inputs, settings, game, target_conf, tick)
    noise_blocks = {}
    for attack, per in report.items():
        noise = per.get("noise")
        if noise is None:
            continue
        spaces = noise.get("by_space") or {"": noise}
        for space, block in spaces.items():
            noise_blocks[f"{attack}{'/' + space if space else ''}"] = block
    return {"game": game.describe(), "mia": report, "exchangeability": mia.exchangeability(noise_blocks)}


def _loss_attack(inputs, settings, game, artefacts, train_x, train_y, base, tick) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The loss attack on every artefact plus ``full``; returns the blocks and per-image scores."""
    num_classes = inputs.real.num_classes
    out, scores = {}, {}
    todo = dict(artefacts)
    todo["full"] = (train_x, train_y)
    for name, (ax, ay) in todo.items():
        start = time.perf_counter()
        epochs = full_epochs(ax.shape[0], settings) if name == "full" else settings.epochs

        def compute(ax=ax, ay=ay, epochs=epochs) -> dict[str, np.ndarray]:
            nets = train_models(ax, ay, num_classes, settings.models, epochs, settings.seed, inputs.device,
                                settings.train_aug, inputs.laterality)
            return {"scores": loss_signal(game, nets, inputs.device)}

        # the full model sees only the train split: its signal is shared by every synthetic set of
        # the data (any IPC), so the synthetic set's size is left out of its key
        key = {k: v for k, v in base.items() if k not in SYNTHETIC_KEYS} if name == "full" else base
        params = {**key, "attack": "loss", "artefact": name, "models": settings.models, "epochs": epochs,
                  "train_aug": settings.train_aug, "full_steps": settings.full_steps}
        if name == "synthetic":
            signal, cached = compute(), False
        else:
            signal, cached = _cached(inputs, params, compute)
        scores[name] = signal["scores"]
        out[name] = {**_blocks_for(game, signal["scores"], settings, time.perf_counter() - start),
                     "models": settings.models, "epochs": epochs, "cached": cached}
        tick()
    return out, scores


def _lira_attack(inputs, settings, game, target_conf, tick) -> dict[str, Any]:
    """Online LiRA: ``shadows`` distillations on random halves of members and non-members."""
    if inputs.shadow_distill is None:
        raise ConfigError("--mia-shadows needs the distillation settings of the synthetic file (its provenance)")
    n = game.y.size
    inside = mia.lira_splits(n, settings.shadows, settings.seed)
    start = time.perf_counter()
    shadow_conf = np.zeros((settings.shadows, n))
    for s in range(settings.shadows):
        sx, sy = inputs.shadow_distill(inside[s], settings.seed + 1000 * (s + 1))
        nets = train_models(sx, sy, inputs.real.num_classes, 1, settings.epochs, settings.seed + s, inputs.device,
                            settings.train_aug, inputs.laterality)
        shadow_conf[s] = mia.model_confidence(nets[0], game.x.to(inputs.device), game.y)
        tick()
    seconds = time.perf_counter() - start
    out = {}
    for name in ("synthetic", "random", "full", "noise"):
        if name in target_conf:
            scores = mia.lira_scores(target_conf[name], shadow_conf, inside)
            out[name] = {**_blocks_for(game, scores, settings, seconds), "shadows": settings.shadows}
    return out


# --------------------------------------------------------------------------- gates


def gate(audit: dict[str, Any], max_auc: float | None, max_tpr: float | None) -> tuple[int, list[str]]:
    """Exit code of the MIA gates (0, 3 or 5) and the reasons.

    Gates read the ``synthetic`` artefact of every attack (the headline space for set distance).
    When the noise floor says the splits are not exchangeable the audit cannot judge: exit 3.
    """
    if max_auc is None and max_tpr is None:
        return 0, []
    if not audit["exchangeability"]["exchangeable"]:
        return 3, [f"splits not exchangeable, the MIA gates cannot judge: {audit['exchangeability']['reason']}"]
    reasons = []
    for attack, per in audit["mia"].items():
        block = per.get("synthetic")
        if block is None:
            continue
        if max_auc is not None and block["auc"] > max_auc:
            reasons.append(f"{attack} AUC {block['auc']:.3f} > --max-mia-auc {max_auc}")
        if max_tpr is not None and block["tpr_at_1pct_fpr"] > max_tpr:
            reasons.append(f"{attack} TPR at 1% FPR {block['tpr_at_1pct_fpr']:.3f} > --max-mia-tpr {max_tpr}")
    return (5 if reasons else 0), reasons


def check_gate_values(max_auc: float | None, max_tpr: float | None) -> None:
    for name, value in (("--max-mia-auc", max_auc), ("--max-mia-tpr", max_tpr)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
            raise ConfigError(f"{name} {value!r}: expected a number in [0, 1]")

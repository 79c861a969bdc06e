"""The ``medcondense`` command: one thin Typer command per stage.

Each command only parses options into the stage's config dataclass (:mod:`medcondense.config`)
and calls ``run(config)`` of the stage, which returns a JSON-able result dict. This module turns
that dict into a table (or ``--json``) on stdout and domain errors into one line on stderr and
the exit code from :mod:`medcondense.errors`. Heavy libraries are imported inside the commands,
so ``medcondense --help`` stays instant.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from medcondense import __version__
from medcondense.config import (
    DistillConfig,
    EvaluateConfig,
    ExportConfig,
    IngestConfig,
    ScoreConfig,
    build_config,
)
from medcondense.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, AlreadyDone, MedcondenseError

app = typer.Typer(
    name="medcondense",
    help=(
        "Turn folders of DICOM/NIfTI images into tiny distilled training sets, and tell how good "
        "they are.\n\n"
        "Pipeline: ingest -> distill -> evaluate -> score -> export, all through one HDF5 format. "
        "With no file names, stages work in the working directory (--workdir or "
        "$MEDCONDENSE_WORKDIR, default '.'): ingest writes data.h5, distill reads it and writes "
        "syn_<method>_ipc<N>.h5.\n\n"
        "Exit codes: 0 ok, 1 runtime failure, 2 usage/config error, 3 no usable input, "
        "4 some inputs rejected, 5 a gate failed, 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
log = logging.getLogger("medcondense")

# Options shared by every stage -------------------------------------------------------------
ConfigOpt = typer.Option(None, "--config", help="YAML config file (repeatable); sections per stage, e.g. 'distill: {ipc: 10}'.")
SetOpt = typer.Option(None, "--set", help="Override one option: --set distill.ipc=10 (repeatable).")
JsonOpt = typer.Option(False, "--json", help="Print the result as one JSON document on stdout.")
QuietOpt = typer.Option(False, "-q", "--quiet", help="Only warnings and errors on stderr; no progress bar.")
VerboseOpt = typer.Option(0, "-v", "--verbose", count=True, help="More detail on stderr (-v debug, with tracebacks on errors).")
WorkdirOpt = typer.Option(None, "--workdir", help="Folder for default file names [env MEDCONDENSE_WORKDIR; default: .].")
DeviceOpt = typer.Option(None, "--device", help="auto|cpu|cuda|cuda:N [default: auto = CUDA when present].")
SeedOpt = typer.Option(None, "--seed", help="Random seed [default: 0].")
OverwriteOpt = typer.Option(None, "--overwrite/--no-overwrite", help="Replace an existing output [default: no; re-running with identical inputs is a no-op].")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"medcondense {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
) -> None:
    """Top-level options."""


def _run_stage(
    module: str,
    config: Any,
    *,
    as_json: bool,
    quiet: bool,
    verbose: int,
) -> None:
    """Run ``module.run(config)``, print its result, and exit with the right code."""
    from medcondense import distributed, interrupts
    from medcondense.console import setup_logging

    # under torchrun, ranks other than 0 log warnings only, prefixed "[rank r]", and draw no bar
    main_rank = distributed.is_main_process()
    setup_logging(verbose, quiet or not main_rank, prefix=distributed.rank_prefix())
    try:
        with interrupts.installed():  # SIGTERM behaves like Ctrl-C: clean-up, exit 130
            _run_stage_body(module, config, as_json=as_json, verbose=verbose, main_rank=main_rank)
    finally:
        distributed.leave()


def _run_stage_body(module: str, config: Any, *, as_json: bool, verbose: int, main_rank: bool = True) -> None:
    """:func:`_run_stage` with the signal handlers in place.

    Under torchrun only rank 0 holds the output's lock and prints the result; every rank exits
    with the same code (the stages hand rank 0's outcome to every rank).
    """
    from medcondense import distributed, interrupts
    from medcondense.atomic import output_lock
    from medcondense.console import stdout_console

    output = getattr(config, "output", None)
    prefix = distributed.rank_prefix()
    interrupts.mark_final(output)
    try:
        distributed.check_stage(module.split(".")[1])
        stage = import_module(module)
        with output_lock(output) if output and main_rank else nullcontext():
            result = stage.run(config)
    except AlreadyDone as done:
        log.info("%s is up to date (same inputs and options); pass --overwrite to redo it", done.path)
        result = {"skipped": True, "output": done.path, **done.result}
        stage = import_module(module)
    except MedcondenseError as exc:
        if verbose:
            log.exception("error")
        typer.echo(f"{prefix}error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        interrupts.finish()
        what = "terminated (SIGTERM)" if isinstance(exc, interrupts.Terminated) else "interrupted"
        kept = f"; {output} unchanged" if output else ""
        typer.echo(f"{prefix}{what}{kept}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:  # a bug: say so in one line, traceback only with -v
        if verbose:
            log.exception("unexpected error")
        typer.echo(
            f"{prefix}error: unexpected {type(exc).__name__}: {exc} (a bug in medcondense; rerun with -v for the traceback)",
            err=True,
        )
        raise typer.Exit(EXIT_RUNTIME) from None
    if interrupts.finish() is not None:
        log.warning("interrupted while %s was being published; it is complete, so the stage finished", output)
    exit_code = int(result.pop("exit_code", 0)) if isinstance(result, dict) else 0
    if not main_rank:  # rank 0 prints the one result
        raise typer.Exit(exit_code)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    elif hasattr(stage, "render"):
        stage.render(result, stdout_console())
    raise typer.Exit(exit_code)


def _common(config: Optional[List[Path]], sets: Optional[List[str]]) -> dict[str, Any]:
    return {"config_files": [str(p) for p in config or []], "set_options": sets or []}


def _config_or_exit(factory: Callable[[], Any]) -> Any:
    """Build a config, turning a ConfigError into one line and exit 2."""
    try:
        return factory()
    except MedcondenseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _split_list(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


# ingest ---------------------------------------------------------------------------------------
@app.command()
def ingest(
    inputs: List[Path] = typer.Argument(..., help="Folders or files of DICOM (found by content, DICOMDIR-aware) and/or NIfTI (.nii, .nii.gz)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output HDF5 [default: <workdir>/data.h5]."),
    size: Optional[int] = typer.Option(None, "--size", help="Output image size in pixels, e.g. 28, 32, 64, 128 [default: 64]."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Resample in-plane to this spacing in mm before crop/resize [default: keep]."),
    window: Optional[str] = typer.Option(None, "--window", help="auto | voi (the file's own) | brain | subdural | bone | lung | abdomen | mediastinum | C/W (e.g. 40/400) | percentile | none [default: auto: VOI for CT, percentile for MR/NIfTI]."),
    normalize: Optional[str] = typer.Option(None, "--normalize", help="window ([0,1]) | zscore | ct (clip 0.5/99.5 pct + z-score) [default: window]."),
    channels: Optional[str] = typer.Option(None, "--channels", help="grey (RGB -> luminance) | keep [default: grey]."),
    axis: Optional[int] = typer.Option(None, "--axis", help="NIfTI slicing axis in RAS: 0 sagittal, 1 coronal, 2 axial [default: 2]."),
    slices: Optional[str] = typer.Option(None, "--slices", help="Which slices of a volume: all | every:K | central:N [default: all]."),
    mask_suffix: Optional[str] = typer.Option(None, "--mask-suffix", help="NIfTI masks beside images (e.g. _mask for a_mask.nii.gz); keep only slices the mask touches."),
    labels_csv: Optional[Path] = typer.Option(None, "--labels", help="CSV manifest path,label[,patient,split,site] (paths relative to the CSV); wins over other label sources."),
    label_tag: Optional[str] = typer.Option(None, "--label-tag", help="Take the label from this DICOM keyword (e.g. BodyPartExamined)."),
    split: Optional[str] = typer.Option(None, "--split", help="Train,val,test fractions by patient, seeded and stratified [default: 0.7,0.15,0.15]; a CSV split column wins."),
    site: Optional[str] = typer.Option(None, "--site", help="Site name stored with every image (never read from tags)."),
    modality: Optional[str] = typer.Option(None, "--modality", help="Override the modality (CT, MR, ...) [default: from DICOM; MR for NIfTI]."),
    laterality: Optional[bool] = typer.Option(None, "--laterality/--no-laterality", help="Whether left/right flips change meaning (distill then avoids flip augmentation) [default: yes]."),
    hash_paths: Optional[bool] = typer.Option(None, "--hash-paths/--no-hash-paths", help="Store keyed hashes instead of relative source paths (for folder names holding patient names)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel reader processes [default: 1]."),
    on_error: Optional[str] = typer.Option(None, "--on-error", help="skip (reject bad files, exit 4) | fail (stop at the first bad file) [default: skip]."),
    rejects: Optional[Path] = typer.Option(None, "--rejects", help="Rejects report CSV [default: <output>.rejects.csv, written only when something was rejected]."),
    seed: Optional[int] = SeedOpt,
    overwrite: Optional[bool] = OverwriteOpt,
    workdir: Optional[Path] = WorkdirOpt,
    config: Optional[List[Path]] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Read DICOM/NIfTI into a windowed, resampled, normalized HDF5 data set.

    Examples:

      medcondense ingest ./dicoms                       # writes ./data.h5

      medcondense ingest ./ct --window brain --size 64 --labels labels.csv -o ct.h5

      medcondense ingest ./mri --normalize zscore --slices central:20 --json
    """
    from medcondense.config import default_data_path

    cfg = _config_or_exit(lambda: build_config(
        IngestConfig, **_common(config, sets),
        inputs=[str(p) for p in inputs],
        output=str(output) if output else None,
        size=size, spacing=spacing, window=window, normalize=normalize, channels=channels,
        axis=axis, slices=slices, mask_suffix=mask_suffix,
        labels_csv=str(labels_csv) if labels_csv else None, label_tag=label_tag,
        split=split, site=site, modality=modality, laterality=laterality, hash_paths=hash_paths,
        workers=workers, on_error=on_error, rejects=str(rejects) if rejects else None,
        seed=seed, overwrite=overwrite,
    ))
    if cfg.output is None:
        cfg.output = str(default_data_path(str(workdir) if workdir else None))
    _run_stage("medcondense.ingest.pipeline", cfg, as_json=as_json, quiet=quiet, verbose=verbose)


# distill --------------------------------------------------------------------------------------
def _method_help() -> str:
    """``--method``'s help, listing the names of the method table (which imports no torch)."""
    from medcondense.distill.registry import CORESETS, METHODS

    return (f"{' | '.join(METHODS)} (synthetic) or {' | '.join(CORESETS)} (coreset of real images) "
            "[default: dsa].")


@app.command()
def distill(
    data: Optional[Path] = typer.Argument(None, help="Real data set from ingest [default: <workdir>/data.h5]."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output HDF5 [default: syn_<method>_ipc<N>.h5 beside the input]."),
    method: Optional[str] = typer.Option(None, "--method", help=_method_help()),
    ipc: Optional[int] = typer.Option(None, "--ipc", help="Images per class, e.g. 1, 10, 50 [default: 10]."),
    preset: Optional[str] = typer.Option(None, "--preset", help="quick (minutes on a CPU) | paper (the reference iteration counts) [default: quick]."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Outer iterations [default: from --preset: quick DC/DSA 10, DM 200; paper DC/DSA 1000, DM 20000]."),
    outer_loop: Optional[int] = typer.Option(None, "--outer-loop", help="DC/DSA outer loop [default: by IPC, from the reference table]."),
    inner_loop: Optional[int] = typer.Option(None, "--inner-loop", help="DC/DSA inner loop [default: by IPC, from the reference table]."),
    lr_img: Optional[float] = typer.Option(None, "--lr-img", help="Learning rate of the synthetic images [default: 0.1 for DC/DSA, 1.0 for DM]."),
    batch_real: Optional[int] = typer.Option(None, "--batch-real", help="Real images per class per step [default: from --preset: quick 64, paper 256 (the reference)]."),
    init: Optional[str] = typer.Option(None, "--init", help="real | noise [default: real]."),
    aug: Optional[str] = typer.Option(None, "--aug", help="DSA/DM augmentations, comma-separated from color,crop,cutout,flip,scale,rotate, or none [default: all but flip when the data set says laterality matters]."),
    batch_classes: Optional[str] = typer.Option(None, "--batch-classes", help="auto | on | off: DM sends all classes through the net in one pass [default: auto = on for CUDA; off on a CPU, where one class at a time measured faster]."),
    amp: Optional[str] = typer.Option(None, "--amp", help="auto | off | bf16: bfloat16 autocast of the first-order network passes (DC/DSA: real gradients and inner loop; DM: embeddings) [default: auto = bf16 on CPUs with native bf16, else off]."),
    compile_: Optional[str] = typer.Option(None, "--compile", help="auto | on | off: run the first-order network passes through torch.compile (needs a C++ compiler on CPU, Triton on CUDA; falls back to eager with a warning) [default: auto = on for CPU runs long enough to repay the compile time (updates x batch-real >= 5000); off on CUDA]."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Save a checkpoint every K iterations [default: 50]."),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Continue bit-for-bit from <output>.ckpt of the same run (same input and options). Ctrl-C saves one."),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--no-deterministic", help="Ask torch for deterministic kernels (slower on GPU)."),
    device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt,
    overwrite: Optional[bool] = OverwriteOpt,
    workdir: Optional[Path] = WorkdirOpt,
    config: Optional[List[Path]] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Distil a real data set into a few images per class (DC, DSA, DM) or pick a coreset.

    Examples:

      medcondense distill --method dsa --ipc 10         # data.h5 -> syn_dsa_ipc10.h5

      medcondense distill data.h5 --method dm --ipc 50 --preset paper --device cuda -o syn.h5

      medcondense distill data.h5 --method herding --ipc 10
    """
    from medcondense.config import default_data_path, default_syn_name

    cfg = _config_or_exit(lambda: build_config(
        DistillConfig, **_common(config, sets),
        input=str(data) if data else None, output=str(output) if output else None,
        method=method, ipc=ipc, preset=preset, iterations=iterations, outer_loop=outer_loop,
        inner_loop=inner_loop, lr_img=lr_img, batch_real=batch_real, init=init,
        aug=_split_list(aug), batch_classes=batch_classes, amp=amp, compile=compile_,
        checkpoint_every=checkpoint_every, resume=resume, deterministic=deterministic,
        device=device, seed=seed, overwrite=overwrite,
    ))
    if cfg.input is None:
        cfg.input = str(default_data_path(str(workdir) if workdir else None))
    if cfg.output is None:
        cfg.output = str(Path(cfg.input).parent / default_syn_name(cfg.method, cfg.ipc))
    _run_stage("medcondense.distill.pipeline", cfg, as_json=as_json, quiet=quiet, verbose=verbose)


# evaluate -------------------------------------------------------------------------------------
@app.command()
def evaluate(
    inputs: List[Path] = typer.Argument(..., help="Synthetic (or subset, or real) sets to judge; several give one report and a plot."),
    real: Optional[Path] = typer.Option(None, "--real", help="Real data set whose test split is the judge [default: <workdir>/data.h5]."),
    models: Optional[int] = typer.Option(None, "--models", help="Fresh networks trained per set [default: 5; reference: 20]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs [default: 300, or 1000 with --train-aug dsa]."),
    arch: Optional[str] = typer.Option(None, "--arch", help="convnet | resnet18 | mlp [default: convnet]."),
    train_aug: Optional[str] = typer.Option(None, "--train-aug", help="none | dsa augmentation while training [default: none]."),
    baselines: Optional[str] = typer.Option(None, "--baselines", help="Comma list of random,full (cached by content hash) or none [default: random,full]."),
    test_site: Optional[str] = typer.Option(None, "--test-site", help="Test only on images of this site (cross-site evaluation)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the report JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write an accuracy-vs-IPC PNG here [default: beside -o when several sets]."),
    device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt,
    overwrite: Optional[bool] = OverwriteOpt,
    workdir: Optional[Path] = WorkdirOpt,
    config: Optional[List[Path]] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Train fresh networks on a distilled set and test them on the real test split.

    Examples:

      medcondense evaluate syn_dsa_ipc10.h5                # against ./data.h5

      medcondense evaluate syn_*.h5 --real data.h5 -o report.json --models 10
    """
    from medcondense.config import default_data_path

    cfg = _config_or_exit(lambda: build_config(
        EvaluateConfig, **_common(config, sets),
        inputs=[str(p) for p in inputs], real=str(real) if real else None, models=models,
        epochs=epochs, arch=arch, train_aug=train_aug,
        baselines=_split_list(baselines.replace("none", "")) if baselines is not None else None,
        test_site=test_site, output=str(output) if output else None,
        plot=str(plot) if plot else None, device=device, seed=seed, overwrite=overwrite,
    ))
    if cfg.real is None:
        cfg.real = str(default_data_path(str(workdir) if workdir else None))
    _run_stage("medcondense.evaluate.pipeline", cfg, as_json=as_json, quiet=quiet, verbose=verbose)


# score ----------------------------------------------------------------------------------------
@app.command()
def score(
    data: Optional[Path] = typer.Argument(None, help="Real data set [default: <workdir>/data.h5]."),
    syn: Optional[Path] = typer.Argument(None, help="A distilled set: adds distance, coverage and the privacy audit."),
    ipc: Optional[str] = typer.Option(None, "--ipc", help="Target IPCs for the indicator, comma-separated [default: 1,10,50]."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Random subsets per IPC for the indicator [default: 3]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs for the indicator [default: 300]."),
    ssim_threshold: Optional[float] = typer.Option(None, "--ssim-threshold", help="Near-copy if SSIM to a real training image >= this [default: 0.95]."),
    cosine_threshold: Optional[float] = typer.Option(None, "--cosine-threshold", help="Near-copy if embedding cosine >= this [default: 0.98]."),
    fail_on_copies: Optional[bool] = typer.Option(None, "--fail-on-copies/--no-fail-on-copies", help="Exit 5 when near-copies are found (for pipelines that must not share them)."),
    pairs_dir: Optional[Path] = typer.Option(None, "--pairs-dir", help="Save each flagged synthetic/real pair as a PNG here."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Predictor calibration JSON [default: the shipped one]."),
    calibrate: Optional[List[Path]] = typer.Option(None, "--calibrate", help="Refit the predictor from these benchmark result JSONs and write it to -o."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the score JSON (or, with --calibrate, the calibration) here."),
    device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt,
    workdir: Optional[Path] = WorkdirOpt,
    config: Optional[List[Path]] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Predict whether distilling will pay (before), or measure a distilled set and audit privacy (after).

    Examples:

      medcondense score                                   # indicator + proxies for ./data.h5

      medcondense score data.h5 syn_dsa_ipc10.h5 --fail-on-copies
    """
    from medcondense.config import default_data_path

    cfg = _config_or_exit(lambda: build_config(
        ScoreConfig, **_common(config, sets),
        data=str(data) if data else None, syn=str(syn) if syn else None,
        ipc=_split_list(ipc), repeats=repeats, epochs=epochs, ssim_threshold=ssim_threshold,
        cosine_threshold=cosine_threshold, fail_on_copies=fail_on_copies,
        pairs_dir=str(pairs_dir) if pairs_dir else None,
        calibration=str(calibration) if calibration else None,
        calibrate=[str(p) for p in calibrate] if calibrate else None,
        output=str(output) if output else None, device=device, seed=seed,
    ))
    if cfg.data is None:
        cfg.data = str(default_data_path(str(workdir) if workdir else None))
    _run_stage("medcondense.score.pipeline", cfg, as_json=as_json, quiet=quiet, verbose=verbose)


# export ---------------------------------------------------------------------------------------
@app.command()
def export(
    data: Path = typer.Argument(..., help="A medcondense HDF5 (synthetic, subset or real)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output folder [default: <input name>_export beside the input]."),
    formats: Optional[str] = typer.Option(None, "--format", help="png | nifti | dicom | npz | card | all, comma-separated [default: png]."),
    stack: Optional[bool] = typer.Option(None, "--stack/--no-stack", help="NIfTI: one stack per class instead of one file per image."),
    uid_root: Optional[str] = typer.Option(None, "--uid-root", help="DICOM UID root for the fresh UIDs [default: pydicom's]."),
    report: Optional[List[Path]] = typer.Option(None, "--report", help="An evaluate or score JSON whose numbers go into the data card (repeatable)."),
    license: Optional[str] = typer.Option(None, "--license", help="Licence text for the data card [default: a reminder to choose one]."),
    allow_real: Optional[bool] = typer.Option(None, "--allow-real/--no-allow-real", help="Allow DICOM export of real images (subset or real sets); identifiers are stripped."),
    overwrite: Optional[bool] = OverwriteOpt,
    config: Optional[List[Path]] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Write a set as PNG, NIfTI, DICOM Secondary Capture or MedMNIST-style npz, with a data card.

    Formats: png (per image + class grid), nifti (modality values, affine from the spacing),
    dicom (Secondary Capture, one series per class, no patient data, values restored to the
    ingest window), npz (MedMNIST keys train/val/test_images/_labels), card (CARD.md + card.json).
    The output folder is written whole or not at all. Real images (kind real or subset) are never
    called synthetic, and DICOM of them needs --allow-real.

    Examples:

      medcondense export syn_dsa_ipc10.h5 --format all -o shared_set/

      medcondense export syn_dm_ipc10.h5 --format dicom,card --report report.json --report score.json -o out/

      medcondense export data.h5 --format png -o inspect/
    """
    cfg = _config_or_exit(lambda: build_config(
        ExportConfig, **_common(config, sets),
        input=str(data), output=str(output) if output else None, formats=_split_list(formats),
        stack=stack, uid_root=uid_root, report=[str(p) for p in report] if report else None,
        license=license, allow_real=allow_real, overwrite=overwrite,
    ))
    if cfg.output is None:
        cfg.output = str(Path(cfg.input).with_name(Path(cfg.input).stem + "_export"))
    _run_stage("medcondense.export.pipeline", cfg, as_json=as_json, quiet=quiet, verbose=verbose)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="medcondense")


if __name__ == "__main__":
    main()

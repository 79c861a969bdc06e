"""The ``medcondense`` command: one thin Typer command per stage.

Each command only parses options into the stage's config dataclass (:mod:`medcondense.config`)
and calls ``run(config)`` of the stage, which returns a JSON-able result dict. This module turns
that dict into a table (or ``--json``) on stdout and domain errors into one line on stderr and
the exit code from :mod:`medcondense.errors`. Heavy libraries are imported inside the commands,
so ``medcondense --help`` stays instant.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import sys
from contextlib import nullcontext
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
import typer.core

from medcondense import __version__, cli_values
from medcondense.config import (
    DistillConfig,
    EvaluateConfig,
    ExportConfig,
    IngestConfig,
    ScoreConfig,
    build_config,
)
from medcondense.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, AlreadyDone, ConfigError, MedcondenseError

class _Group(cli_values.PlainValues, typer.core.TyperGroup):
    """The command group; typer's pydantic conversion of plain option values is replaced by
    :mod:`medcondense.cli_values` (the same values and errors, 0.1 s less start-up)."""


class _Command(cli_values.PlainValues, typer.core.TyperCommand):
    """One stage's command, with the plain option values of :class:`_Group`."""


app = typer.Typer(
    name="medcondense",
    cls=_Group,
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


def _one_blas_thread() -> None:
    """Ingest does no linear algebra (its parallelism is --workers processes): ask numpy's
    OpenBLAS for one thread instead of a pool of one per core, which its import starts (0.04 CPU s
    of start-up, more on a busy machine). Only before numpy is imported, and never over the
    user's own setting."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


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
        stage = _import_stage(module)
        with output_lock(output) if output and main_rank else nullcontext():
            result = stage.run(config)
    except AlreadyDone as done:
        log.info("%s is up to date (same inputs and options); pass --overwrite to redo it", done.path)
        result = {"skipped": True, "output": done.path, **done.result}
        stage = _import_stage(module)
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
    interrupts.hold()  # the work is done: a signal while printing the result changes nothing
    exit_code = int(result.pop("exit_code", 0)) if isinstance(result, dict) else 0
    if not main_rank:  # rank 0 prints the one result
        raise typer.Exit(exit_code)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    elif hasattr(stage, "render"):
        stage.render(result, stdout_console())
    if interrupts.finish() is not None:
        log.warning("interrupt received after %s was complete; the stage finished (exit %d)", output or "the output", exit_code)
    raise typer.Exit(exit_code)


def _import_stage(module: str) -> Any:
    """Import a stage's module (and with it numpy, h5py, torch ...) with the cyclic GC paused.

    A first import creates some 10^5 objects (functions, classes, module dicts) that live as long
    as the process; the collector would traverse them again and again while they are created and
    in later full collections. So collection waits until the import is done, and the new objects
    then go to the permanent generation (:func:`gc.freeze`), which collections skip. In a 500-slice
    ingest the collections' time fell from 16-17 to 11-12 ms (docs/results.md, "Ingest against
    dcm2niix"); the other stages import torch the same way (not measured there).
    """
    if module in sys.modules:
        return sys.modules[module]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return import_module(module)
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


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
@app.command(cls=_Command)
def ingest(
    inputs: List[str] = typer.Argument(..., help="Folders or files of DICOM (found by content, DICOMDIR-aware) and/or NIfTI (.nii, .nii.gz); or of PNG/JPEG/TIFF images; or one MedMNIST-style .npz; or DICOMweb roots (https://pacs.example/dicom-web; needs medcondense[pacs]).", show_default=False),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output HDF5 [default: <workdir>/data.h5]."),
    size: Optional[int] = typer.Option(None, "--size", help="Output image size in pixels, e.g. 28, 32, 64, 128 [default: 64]."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Resample in-plane to this spacing in mm before crop/resize [default: keep]."),
    window: Optional[str] = typer.Option(None, "--window", help="auto | voi (the file's own) | brain | subdural | bone | lung | abdomen | mediastinum | C/W (e.g. 40/400) | percentile | none [default: auto: VOI for CT, percentile for MR/NIfTI, as stored for PNG/JPEG/TIFF/npz]."),
    normalize: Optional[str] = typer.Option(None, "--normalize", help="window ([0,1]) | zscore | ct (clip 0.5/99.5 pct + z-score) [default: window]."),
    channels: Optional[str] = typer.Option(None, "--channels", help="grey (RGB -> luminance) | keep [default: grey]."),
    axis: Optional[int] = typer.Option(None, "--axis", help="NIfTI slicing axis in RAS: 0 sagittal, 1 coronal, 2 axial [default: 2]."),
    slices: Optional[str] = typer.Option(None, "--slices", help="Which slices of a volume: all | every:K | central:N [default: all]."),
    mask_suffix: Optional[str] = typer.Option(None, "--mask-suffix", help="NIfTI masks beside images (e.g. _mask for a_mask.nii.gz); keep only slices the mask touches."),
    labels_csv: Optional[Path] = typer.Option(None, "--labels", help="CSV manifest keyed by one column, path (relative to the CSV), study_uid, series_uid, accession or patient_id, then label[,patient,split,site]; wins over other label sources. Keys are matched, never stored."),
    label_tag: Optional[str] = typer.Option(None, "--label-tag", help="Take the label from this DICOM keyword (e.g. BodyPartExamined); identifying ones (PatientName, ...) are refused."),
    allow_identifying_label_tag: Optional[bool] = typer.Option(None, "--allow-identifying-label-tag", help="Allow --label-tag on an identifying attribute (DICOM PS3.15 basic profile); its values become class names in every output."),
    allow_burned_in: Optional[bool] = typer.Option(None, "--allow-burned-in", help="Keep images whose file says BurnedInAnnotation or RecognizableVisualFeatures YES [default: reject them]; exports then say BurnedInAnnotation YES."),
    split: Optional[str] = typer.Option(None, "--split", help="Train,val,test fractions by patient, seeded and stratified [default: 0.7,0.15,0.15]; a CSV split column wins."),
    site: Optional[str] = typer.Option(None, "--site", help="Site name stored with every image (never read from tags)."),
    modality: Optional[str] = typer.Option(None, "--modality", help="Override the modality (CT, MR, ...) [default: from DICOM; MR for NIfTI]."),
    laterality: Optional[bool] = typer.Option(None, "--laterality/--no-laterality", help="Whether left/right flips change meaning (distill then avoids flip augmentation) [default: yes]."),
    hash_paths: Optional[bool] = typer.Option(None, "--hash-paths/--no-hash-paths", help="Store keyed hashes instead of relative source paths (for folder names holding patient names)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel reader processes [default: 1]."),
    on_error: Optional[str] = typer.Option(None, "--on-error", help="skip (reject bad files, exit 4) | fail (stop at the first bad file) [default: skip]."),
    rejects: Optional[Path] = typer.Option(None, "--rejects", help="Rejects report CSV [default: <output>.rejects.csv, written only when something was rejected]."),
    protocol: Optional[Path] = typer.Option(None, "--protocol", help="Take size, spacing, window, percentiles, normalization (with the source's zscore/ct constants), channels, axis, slices and the class names from this set (.h5) or protocol YAML (export --format protocol), so several sites' files merge; a contradicting option is exit 2."),
    studies: Optional[List[str]] = typer.Option(None, "--study", help="DICOMweb: a StudyInstanceUID to read (repeatable) [default: the studies of a study/series/accession/patient-keyed --labels CSV]."),
    query: Optional[str] = typer.Option(None, "--query", help="DICOMweb: read the studies a QIDO-RS search finds, e.g. 'ModalitiesInStudy=CT&StudyDate=20200101-20201231'."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="DICOMweb: keep retrieved instances in this folder to resume a run (raw DICOM with patient data; warned) [default: memory only]."),
    input_format: Optional[str] = typer.Option(None, "--input-format", help="auto (refuses a mix) | dicom (DICOM and NIfTI; images ignored) | images (PNG/JPEG/TIFF) | npz (MedMNIST layout) [default: auto]."),
    class_names: Optional[str] = typer.Option(None, "--class-names", help="npz: comma-separated class names by label index, when no classes.json sits beside the file and medmnist is not installed."),
    seed: Optional[int] = SeedOpt,
    overwrite: Optional[bool] = OverwriteOpt,
    workdir: Optional[Path] = WorkdirOpt,
    config: Optional[List[Path]] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Read DICOM/NIfTI (folders, files or a DICOMweb server), PNG/JPEG/TIFF folders or a MedMNIST
    npz into a windowed, resampled, normalized HDF5 data set.

    DICOMweb credentials come only from $MEDCONDENSE_DICOMWEB_TOKEN, or
    $MEDCONDENSE_DICOMWEB_USER and $MEDCONDENSE_DICOMWEB_PASSWORD, or ~/.netrc.

    Examples:

      medcondense ingest ./dicoms                       # writes ./data.h5

      medcondense ingest ./ct --window brain --size 64 --labels labels.csv -o ct.h5

      medcondense ingest ./mri --normalize zscore --slices central:20 --json

      medcondense ingest ./derm_photos --channels keep -o derm.h5   # JPEG class folders

      medcondense ingest pathmnist.npz --size 28 -o path.h5        # splits kept

      medcondense ingest ./site_b --protocol site_a.h5 --site b -o b.h5   # compatible with site a

      medcondense ingest https://pacs.example/dicom-web --labels studies.csv -o ct.h5
    """
    from medcondense.config import default_data_path, explicit_options

    _one_blas_thread()

    values = dict(
        inputs=list(inputs),
        output=str(output) if output else None,
        size=size, spacing=spacing, window=window, normalize=normalize, channels=channels,
        axis=axis, slices=slices, mask_suffix=mask_suffix,
        labels_csv=str(labels_csv) if labels_csv else None, label_tag=label_tag,
        allow_identifying_label_tag=allow_identifying_label_tag, allow_burned_in=allow_burned_in,
        split=split, site=site, modality=modality, laterality=laterality, hash_paths=hash_paths,
        workers=workers, on_error=on_error, rejects=str(rejects) if rejects else None,
        protocol=str(protocol) if protocol else None, seed=seed, overwrite=overwrite,
        studies=studies or None, query=query, cache=str(cache) if cache else None,
        input_format=input_format, class_names=_split_list(class_names),
    )
    cfg = _config_or_exit(lambda: build_config(IngestConfig, **_common(config, sets), **values))
    if cfg.protocol:
        from medcondense.ingest import protocol as proto

        given = explicit_options(IngestConfig, **_common(config, sets), **values)
        cfg = _config_or_exit(lambda: proto.apply(cfg, proto.load(cfg.protocol), given))
    if cfg.output is None:
        cfg.output = str(default_data_path(str(workdir) if workdir else None))
    _run_stage("medcondense.ingest.pipeline", cfg, as_json=as_json, quiet=quiet, verbose=verbose)


# distill --------------------------------------------------------------------------------------
def _method_help() -> str:
    """``--method``'s help, listing the names of the method table (which imports no torch)."""
    from medcondense.distill.registry import CORESETS, METHODS

    return (f"{' | '.join(METHODS)} (synthetic) or {' | '.join(CORESETS)} (coreset of real images) "
            "[default: dsa].")


@app.command(cls=_Command)
def distill(
    data: Optional[Path] = typer.Argument(None, help="Real data set from ingest [default: <workdir>/data.h5]."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output HDF5 [default: syn_<method>_ipc<N>.h5 beside the input]."),
    method: Optional[str] = typer.Option(None, "--method", help=_method_help()),
    ipc: Optional[int] = typer.Option(None, "--ipc", help="Images per class, e.g. 1, 10, 50 [default: 10]."),
    preset: Optional[str] = typer.Option(None, "--preset", help="quick (minutes on a CPU) | paper (the reference iteration counts) | medmnist (MTT only: the seed study's PathMNIST values) [default: quick]."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Outer iterations [default: from --preset: quick DC/DSA 10, DM 200, MTT 10; paper DC/DSA 1000, DM 20000, MTT 5000]."),
    outer_loop: Optional[int] = typer.Option(None, "--outer-loop", help="DC/DSA outer loop [default: by IPC, from the reference table]."),
    inner_loop: Optional[int] = typer.Option(None, "--inner-loop", help="DC/DSA inner loop [default: by IPC, from the reference table]."),
    lr_img: Optional[float] = typer.Option(None, "--lr-img", help="Learning rate of the synthetic images [default: 0.1 for DC/DSA, 1.0 for DM and DP-DM, 0.2 for IDM, 1000 for MTT (its table)]."),
    batch_real: Optional[int] = typer.Option(None, "--batch-real", help="Real images per class per step [default: from --preset: quick 64, paper 256 (the reference)]."),
    init: Optional[str] = typer.Option(None, "--init", help="real (random real images) | noise | herding | kcenter (real images picked by the coreset rule in a random ConvNet embedding) [default: real]."),
    factor: Optional[int] = typer.Option(None, "--factor", help="IDM: each stored image holds factor x factor smaller images, decoded by upsampling (more images in the same storage; 1 = off) [default: 2]."),
    net_queue: Optional[int] = typer.Option(None, "--net-queue", help="IDM: how many briefly trained networks the embedding queue keeps [default: 100, as the paper's code]."),
    aug: Optional[str] = typer.Option(None, "--aug", help="DSA/DM augmentations, comma-separated from color,crop,cutout,flip,scale,rotate, or none [default: all but flip when the data set says laterality matters]."),
    batch_classes: Optional[str] = typer.Option(None, "--batch-classes", help="auto | on | off: DM sends all classes through the net in one pass [default: auto = on for CUDA; off on a CPU, where one class at a time measured faster]."),
    amp: Optional[str] = typer.Option(None, "--amp", help="auto | off | bf16: bfloat16 autocast of the first-order network passes (DC/DSA: real gradients and inner loop; DM: embeddings; MTT: the experts' training, part of their cache key) [default: auto = bf16 on CPUs with native bf16, else off]."),
    compile_: Optional[str] = typer.Option(None, "--compile", help="auto | on | off: run the first-order network passes through torch.compile (MTT: the experts' training; needs a C++ compiler on CPU, Triton on CUDA; falls back to eager with a warning) [default: auto = on for CPU runs long enough to repay the compile time (updates x batch-real >= 5000); off for MTT and on CUDA]."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Save a checkpoint every K iterations [default: 50]."),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Continue bit-for-bit from <output>.ckpt of the same run (same input and options). Ctrl-C saves one."),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--no-deterministic", help="Ask torch for deterministic kernels (slower on GPU)."),
    dp_epsilon: Optional[float] = typer.Option(None, "--dp-epsilon", help="Differentially private DM (with --method dm): the privacy budget epsilon of the release; needs the extra medcondense[dp] (Opacus). Every run spends budget."),
    dp_delta: Optional[float] = typer.Option(None, "--dp-delta", help="DP delta; must be below 1 / units [default: 1e-5]."),
    dp_clip: Optional[float] = typer.Option(None, "--dp-clip", help="DP: L2 clip of one unit's block of mean embeddings [default: 1.0]."),
    dp_unit: Optional[str] = typer.Option(None, "--dp-unit", help="DP: patient (all of a patient's images) | image [default: patient]."),
    dp_queries: Optional[int] = typer.Option(None, "--dp-queries", help="DP: random networks (with one augmentation draw each) in the release [default: 50]."),
    dp_accountant: Optional[str] = typer.Option(None, "--dp-accountant", help="DP: Opacus accountant rdp | prv [default: rdp]."),
    syn_steps: Optional[int] = typer.Option(None, "--syn-steps", help="MTT: student SGD steps on the synthetic images per iteration [default: by IPC from the author's table (1: 50, 10: 30, 50: 30); quick 5; medmnist 20].", rich_help_panel="MTT"),
    expert_epochs: Optional[int] = typer.Option(None, "--expert-epochs", help="MTT: the target is the expert this many epochs after the start [default: by IPC (2); medmnist 3].", rich_help_panel="MTT"),
    max_start_epoch: Optional[int] = typer.Option(None, "--max-start-epoch", help="MTT: start epochs are drawn below this [default: by IPC (1: 2, 10: 20, 50: 40); quick 5; medmnist 20].", rich_help_panel="MTT"),
    lr_lr: Optional[float] = typer.Option(None, "--lr-lr", help="MTT: learning rate of the learnable step size (SGD, momentum 0.5) [default: by IPC (1: 1e-7, 10/50: 1e-5); medmnist 1e-6].", rich_help_panel="MTT"),
    lr_teacher: Optional[float] = typer.Option(None, "--lr-teacher", help="MTT: the experts' SGD learning rate and the step size's start [default: 0.01].", rich_help_panel="MTT"),
    batch_syn: Optional[int] = typer.Option(None, "--batch-syn", help="MTT: synthetic images per student step [default: all].", rich_help_panel="MTT"),
    num_experts: Optional[int] = typer.Option(None, "--num-experts", help="MTT: expert networks to train [default: quick 3; paper/medmnist 100].", rich_help_panel="MTT"),
    train_epochs: Optional[int] = typer.Option(None, "--train-epochs", help="MTT: epochs per expert [default: quick 8; paper/medmnist 50].", rich_help_panel="MTT"),
    experts: Optional[Path] = typer.Option(None, "--experts", help="MTT: use this expert trajectory file (from --experts-only, same input) [default: <input>.experts/<key>.h5, trained when absent].", rich_help_panel="MTT"),
    experts_only: Optional[bool] = typer.Option(None, "--experts-only", help="MTT: train (or find) the expert trajectories and stop; distil later, elsewhere, with --experts.", rich_help_panel="MTT"),
    unroll: Optional[str] = typer.Option(None, "--unroll", help="MTT: walk (the exact gradient, one student step's graph at a time: memory flat in --syn-steps) | full (every step's graph at once, as the reference) [default: walk].", rich_help_panel="MTT"),
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

    With --dp-epsilon E (and --method dm) the set is (E, delta)-differentially private per
    patient (or image) of the train split: DM matches statistics released once with Gaussian noise
    (docs/distill.md).

    Examples:

      medcondense distill --method dsa --ipc 10         # data.h5 -> syn_dsa_ipc10.h5

      medcondense distill data.h5 --method dm --ipc 50 --preset paper --device cuda -o syn.h5

      medcondense distill data.h5 --method herding --ipc 10

      medcondense distill data.h5 --method mtt --ipc 1 --preset medmnist   # experts built and cached first

      medcondense distill data.h5 --method dm --ipc 10 --dp-epsilon 8 --dp-delta 1e-5 -o syn_dp.h5

      medcondense distill data.h5 --method idm --ipc 10 --factor 2 --init herding
    """
    from medcondense.config import default_data_path, default_syn_name

    cfg = _config_or_exit(lambda: build_config(
        DistillConfig, **_common(config, sets),
        input=str(data) if data else None, output=str(output) if output else None,
        method=method, ipc=ipc, preset=preset, iterations=iterations, outer_loop=outer_loop,
        inner_loop=inner_loop, lr_img=lr_img, batch_real=batch_real, init=init,
        factor=factor, net_queue=net_queue, aug=_split_list(aug), batch_classes=batch_classes, amp=amp, compile=compile_,
        checkpoint_every=checkpoint_every, resume=resume, deterministic=deterministic,
        syn_steps=syn_steps, expert_epochs=expert_epochs, max_start_epoch=max_start_epoch, lr_lr=lr_lr,
        lr_teacher=lr_teacher, batch_syn=batch_syn, num_experts=num_experts, train_epochs=train_epochs,
        experts=str(experts) if experts else None, experts_only=experts_only, unroll=unroll,
        device=device, seed=seed, overwrite=overwrite, dp_epsilon=dp_epsilon, dp_delta=dp_delta, dp_clip=dp_clip,
        dp_unit=dp_unit, dp_queries=dp_queries, dp_accountant=dp_accountant,
    ))
    if cfg.input is None:
        cfg.input = str(default_data_path(str(workdir) if workdir else None))
    if cfg.output is None:
        name = "dm_dp" if cfg.dp_epsilon is not None and cfg.method == "dm" else cfg.method
        cfg.output = str(Path(cfg.input).parent / default_syn_name(name, cfg.ipc))
    _run_stage("medcondense.distill.pipeline", cfg, as_json=as_json, quiet=quiet, verbose=verbose)


# evaluate -------------------------------------------------------------------------------------
@app.command(cls=_Command)
def evaluate(
    inputs: List[Path] = typer.Argument(..., help="Synthetic (or subset, or real) sets to judge; several give one report and a plot."),
    real: Optional[List[Path]] = typer.Option(None, "--real", help="Real data set whose test split is the judge [default: <workdir>/data.h5]. Repeat it for cross-site evaluation: every net is tested at every site (per site, mean of sites, pooled)."),
    models: Optional[int] = typer.Option(None, "--models", help="Fresh networks trained per set [default: 5; reference: 20]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs [default: 300, or 1000 with --train-aug dsa]."),
    arch: Optional[str] = typer.Option(None, "--arch", help="convnet | resnet18 | mlp [default: convnet]."),
    train_aug: Optional[str] = typer.Option(None, "--train-aug", help="none | dsa augmentation while training [default: none; an MTT set trains with dsa]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="SGD learning rate of the trained nets [default: 0.01; an MTT set trains at its learned_lr]."),
    baselines: Optional[str] = typer.Option(None, "--baselines", help="Comma list of random,full (cached by content hash) or none [default: random,full]."),
    test_site: Optional[str] = typer.Option(None, "--test-site", help="Test only on images of this site of the --real file."),
    per_site: Optional[bool] = typer.Option(None, "--per-site/--no-per-site", help="The --real file holds several sites (a merge): test at each site and report per site, mean of sites and pooled, with each site's baselines."),
    allow_mismatch: Optional[bool] = typer.Option(None, "--allow-mismatch", help="Evaluate sets whose class names or intensity space differ from the real set's (a warning instead of exit 2)."),
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

      medcondense evaluate syn_ab.h5 syn_a.h5 --real a.h5 --real b.h5 -o sites.json   # cross-site
    """
    from medcondense.config import default_data_path

    cfg = _config_or_exit(lambda: build_config(
        EvaluateConfig, **_common(config, sets),
        inputs=list(inputs), real=[str(p) for p in real] if real else None, models=models,
        epochs=epochs, arch=arch, train_aug=train_aug, lr=lr,
        baselines=_split_list(baselines.replace("none", "")) if baselines is not None else None,
        test_site=test_site, per_site=per_site, allow_mismatch=allow_mismatch, output=str(output) if output else None,
        plot=str(plot) if plot else None, device=device, seed=seed, overwrite=overwrite,
    ))
    if cfg.real is None:
        cfg.real = str(default_data_path(str(workdir) if workdir else None))
    _run_stage("medcondense.evaluate.pipeline", cfg, as_json=as_json, quiet=quiet, verbose=verbose)


# score ----------------------------------------------------------------------------------------
@app.command(cls=_Command)
def score(
    data: Optional[Path] = typer.Argument(None, help="Real data set [default: <workdir>/data.h5]."),
    syn: Optional[Path] = typer.Argument(None, help="A distilled set: adds distance, coverage and the privacy audit."),
    ipc: Optional[str] = typer.Option(None, "--ipc", help="Target IPCs for the indicator, comma-separated [default: 1,10,50; none when SYN is given]."),
    indicator: Optional[str] = typer.Option(None, "--indicator", help="fast: predict from a training-free proxy in random ConvNets (seconds; its error is stated) | full: train random real subsets and a full-data model, the paper's indicator (minutes on a CPU) [default: fast]."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Random subsets per IPC for the indicator [default: 3]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs for the indicator [default: 300]."),
    ssim_threshold: Optional[float] = typer.Option(None, "--ssim-threshold", help="Near-copy if SSIM to a real training image >= this [default: 0.95]."),
    cosine_threshold: Optional[float] = typer.Option(None, "--cosine-threshold", help="Near-copy if embedding cosine >= this [default: 0.98]."),
    per_site: Optional[bool] = typer.Option(None, "--per-site/--no-per-site", help="The real file holds several sites (a merge): also the indicator and the privacy audit per site."),
    fail_on_copies: Optional[bool] = typer.Option(None, "--fail-on-copies/--no-fail-on-copies", help="Exit 5 when near-copies are found (for pipelines that must not share them)."),
    allow_mismatch: Optional[bool] = typer.Option(None, "--allow-mismatch", help="Score a set made from another real set, or in another class naming or intensity space (a warning instead of exit 2; the privacy audit then compares with a set the images did not come from)."),
    pairs_dir: Optional[Path] = typer.Option(None, "--pairs-dir", help="Save each flagged synthetic/real pair as a PNG here."),
    mia: Optional[bool] = typer.Option(None, "--mia/--no-mia", help="Membership inference: add the loss attack (models trained on the set) to the set-distance attack that always runs with SYN."),
    mia_models: Optional[int] = typer.Option(None, "--mia-models", help="Models trained on each artefact for the loss attack [default: 2]."),
    mia_shadows: Optional[int] = typer.Option(None, "--mia-shadows", help="LiRA with N shadow distillations (even, >= 4; costly) [default: 0 = off]."),
    mia_nonmembers: Optional[str] = typer.Option(None, "--mia-nonmembers", help="Non-member splits: val | test | val,test [default: val,test]."),
    mia_unit: Optional[str] = typer.Option(None, "--mia-unit", help="auto | patient | image [default: auto = patient when the file records patients, else image]."),
    max_mia_auc: Optional[float] = typer.Option(None, "--max-mia-auc", help="Exit 5 when an attack's AUC on SYN exceeds this."),
    max_mia_tpr: Optional[float] = typer.Option(None, "--max-mia-tpr", help="Exit 5 when an attack's TPR at 1% FPR on SYN exceeds this."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Predictor calibration JSON [default: the shipped one]."),
    calibrate: Optional[List[Path]] = typer.Option(None, "--calibrate", help="Refit the predictor from a benchmark result JSON and write it to -o; repeat for several (--calibrate a.json --calibrate b.json)."),
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

      medcondense score data.h5 syn_dm_ipc10.h5 --mia --max-mia-tpr 0.05   # membership inference gate
    """
    from medcondense.config import default_data_path

    _config_or_exit(lambda: _no_stray_files_with_calibrate(calibrate, data, syn))
    cfg = _config_or_exit(lambda: build_config(
        ScoreConfig, **_common(config, sets),
        data=str(data) if data else None, syn=str(syn) if syn else None,
        ipc=_split_list(ipc), indicator=indicator, repeats=repeats, epochs=epochs, ssim_threshold=ssim_threshold,
        cosine_threshold=cosine_threshold, fail_on_copies=fail_on_copies, per_site=per_site, allow_mismatch=allow_mismatch,
        pairs_dir=str(pairs_dir) if pairs_dir else None,
        calibration=str(calibration) if calibration else None,
        calibrate=[str(p) for p in calibrate] if calibrate else None,
        output=str(output) if output else None, device=device, seed=seed, mia=mia, mia_models=mia_models,
        mia_shadows=mia_shadows, mia_nonmembers=_split_list(mia_nonmembers), mia_unit=mia_unit,
        max_mia_auc=max_mia_auc, max_mia_tpr=max_mia_tpr,
    ))
    if cfg.data is None:
        cfg.data = str(default_data_path(str(workdir) if workdir else None))
    _run_stage("medcondense.score.pipeline", cfg, as_json=as_json, quiet=quiet, verbose=verbose)


def _no_stray_files_with_calibrate(calibrate: Optional[List[Path]], data: Optional[Path], syn: Optional[Path]) -> None:
    """``--calibrate a.json b.json`` reads b.json as DATA; a refit without it would drop it silently."""
    stray = [str(p) for p in (data, syn) if p]
    if calibrate and stray:
        raise ConfigError("not read: with --calibrate, give each results file its own --calibrate",
                          path=", ".join(stray), hint="--calibrate a.json --calibrate b.json -o FILE")


# merge ----------------------------------------------------------------------------------------
@app.command(cls=_Command)
def merge(
    inputs: List[Path] = typer.Argument(..., help="Two or more medcondense sets (one per site), all synthetic or all real."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="The merged HDF5 (required)."),
    site_names: Optional[str] = typer.Option(None, "--site-names", help="Comma list, one site name per input [default: each part's recorded site, else its file name]."),
    allow_mixed: Optional[bool] = typer.Option(None, "--allow-mixed/--no-allow-mixed", help="Allow synthetic with real images; the output's kind is then 'mixed' and counts as real everywhere."),
    overwrite: Optional[bool] = OverwriteOpt,
    config: Optional[List[Path]] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Merge several sites' sets into one: classes aligned by name, intensities in one space.

    Checks image size, channels, spacing, axis and window; maps zscore/window parts into the first
    part's intensity space (ct parts only with equal clip bounds), refusing with the reason
    otherwise. Every image keeps its site (meta/site); every part's content hash and provenance
    are recorded. synthetic + synthetic -> synthetic, real + real -> real (the pooled baseline);
    any other mix is exit 2 unless --allow-mixed.

    Examples:

      medcondense merge syn_a.h5 syn_b.h5 -o syn_ab.h5

      medcondense merge a.h5 b.h5 --site-names hospital_a,hospital_b -o pooled.h5 --json
    """
    from medcondense.config import MergeConfig

    cfg = _config_or_exit(lambda: build_config(
        MergeConfig, **_common(config, sets),
        inputs=[str(p) for p in inputs], output=str(output) if output else None,
        site_names=_split_list(site_names), allow_mixed=allow_mixed, overwrite=overwrite,
    ))
    _run_stage("medcondense.merge.pipeline", cfg, as_json=as_json, quiet=quiet, verbose=verbose)


# export ---------------------------------------------------------------------------------------
@app.command(cls=_Command)
def export(
    data: Path = typer.Argument(..., help="A medcondense HDF5 (synthetic, subset or real)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output folder [default: <input name>_export beside the input]."),
    formats: Optional[str] = typer.Option(None, "--format", help="png | nifti | dicom | npz | card | protocol | all (all but protocol), comma-separated [default: png]."),
    stack: Optional[bool] = typer.Option(None, "--stack/--no-stack", help="NIfTI: one stack per class instead of one file per image."),
    uid_root: Optional[str] = typer.Option(None, "--uid-root", help="DICOM UID root for the fresh UIDs [default: pydicom's]."),
    report: Optional[List[Path]] = typer.Option(None, "--report", help="An evaluate or score JSON whose numbers go into the data card (repeatable)."),
    license: Optional[str] = typer.Option(None, "--license", help="Licence text for the data card [default: a reminder to choose one]."),
    allow_real: Optional[bool] = typer.Option(None, "--allow-real/--no-allow-real", help="Allow DICOM export of real images (subset or real sets); identifiers are stripped."),
    png_bits: Optional[int] = typer.Option(None, "--png-bits", help="PNG: 8 or 16 bits per sample (16: grey sets only, for values 8 bits would quantise) [default: 8]."),
    overwrite: Optional[bool] = OverwriteOpt,
    config: Optional[List[Path]] = ConfigOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Write a set as PNG, NIfTI, DICOM Secondary Capture or MedMNIST-style npz, with a data card.

    Formats: png (class folders torchvision ImageFolder and Hugging Face imagefolder read, metadata.csv,
    grid.png beside them), nifti (modality values, affine from the spacing; dataset.json, a MONAI datalist),
    dicom (Secondary Capture, one series per class, no patient data, values restored to the
    ingest window), npz (MedMNIST keys train/val/test_images/_labels), card (CARD.md + card.json),
    protocol (protocol.yaml: the settings and class names other sites pass to ingest --protocol).
    The output folder is written whole or not at all. Real images (kind real, subset or mixed) are
    never called synthetic, and DICOM of them needs --allow-real.

    Examples:

      medcondense export syn_dsa_ipc10.h5 --format all -o shared_set/

      medcondense export syn_dm_ipc10.h5 --format dicom,card --report report.json --report score.json -o out/

      medcondense export data.h5 --format png -o inspect/
    """
    cfg = _config_or_exit(lambda: build_config(
        ExportConfig, **_common(config, sets),
        input=str(data), output=str(output) if output else None, formats=_split_list(formats),
        stack=stack, uid_root=uid_root, report=[str(p) for p in report] if report else None,
        license=license, allow_real=allow_real, overwrite=overwrite, png_bits=png_bits,
    ))
    if cfg.output is None:
        cfg.output = str(Path(cfg.input).with_name(Path(cfg.input).stem + "_export"))
    _run_stage("medcondense.export.pipeline", cfg, as_json=as_json, quiet=quiet, verbose=verbose)


def app_for(args: list[str]) -> typer.Typer:
    """The app to run for ``args``: :data:`app`, or a copy that holds only the command ``args`` name.

    Typer turns every registered command into a click command (options, defaults, help texts)
    before it dispatches: ~12 ms of CPU for the commands a run does not use, in every run. When
    the first argument names a command, only that one is built; anything else (``--help``,
    ``--version``, no argument, a misspelt name) still sees them all. The copy keeps the group's
    callback, so it stays a group and ``medcondense ingest ...`` parses as before; :data:`app`
    itself is never changed (a process may run several commands, as the tests do)."""
    if not args or args[0].startswith("-"):
        return app
    chosen = [c for c in app.registered_commands
              if (c.name or typer.main.get_command_name(c.callback.__name__)) == args[0]]
    if not chosen:
        return app
    trimmed = copy.copy(app)
    trimmed.registered_commands = chosen
    return trimmed


def main() -> None:
    """Console-script entry point."""
    app_for(sys.argv[1:])(prog_name="medcondense")


if __name__ == "__main__":
    main()

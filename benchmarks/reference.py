"""Run the *reference* DatasetCondensation code (DC, DSA, DM) on a medcondense HDF5 file.

This is the fidelity yardstick of issue #5: the same data, the same budget, the authors' own
networks, matching loss, augmentation and evaluation, so that our numbers can be compared with
theirs. The reference code is **not** part of medcondense and is never copied into this repo; you
check it out yourself and point ``--ref-dir`` at it. This script only re-implements the *driver*
loop of the reference's ``main.py`` (DC/DSA) and ``main_DM.py`` (DM) -- reading our HDF5 file
instead of torchvision data sets, with a reduced budget -- and calls the reference's own
``get_network``, ``get_loops``, ``match_loss``, ``DiffAugment``, ``ParamDiffAug``, ``epoch``,
``evaluate_synset``, ``get_daparam`` and ``TensorDataset``.

Getting the reference (once)
----------------------------
::

    git clone https://github.com/VICO-UoE/DatasetCondensation /path/to/DatasetCondensation
    cd /path/to/DatasetCondensation     # tested at commit 53f63a672eab (2023-11-27)
    # 1. networks.py flattens with .view(), which fails on torch >= 2.x for 1-channel inputs
    #    ("view size is not compatible with input tensor's size and stride"): use reshape.
    sed -i -E 's/\\b(out|x)\\.view\\(\\1\\.size\\(0\\), -1\\)/\\1.reshape(\\1.size(0), -1)/' networks.py
    # 2. the Siamese-augmentation helpers in utils.py copy a tensor onto itself
    #    (x[:] = x[0], an overlapping in-place copy): copy from a clone.
    sed -i -E 's/^(\\s*)([A-Za-z_]+)\\[:\\] = ([A-Za-z_]+)\\[0\\]\\s*$/\\1\\2[:] = \\3[0].clone()/' utils.py
    # 3. scipy.ndimage.interpolation is deprecated (removed in SciPy 2.0): import from scipy.ndimage.
    sed -i 's/^from scipy.ndimage.interpolation import/from scipy.ndimage import/' utils.py

Fix 1 is required (torch 2.13: every 1-channel ConvNet/ConvNetBN/AlexNet/LeNet forward raises
without it). Fix 2 is defensive: on torch 2.13 CPU the overlapping copy still works, but it is an
aliasing write that PyTorch does not guarantee. Fix 3 only silences a DeprecationWarning on
SciPy 1.x. Warnings that remain and are harmless: ``affine_grid``/``grid_sample`` default
``align_corners`` (the reference relies on the default, False) and ``torch.meshgrid`` without
``indexing`` (the default, "ij", is what the reference means). Not torch problems, but limits of
the reference: its MLP and LeNet assume 28x28 for 1-channel images, ConvNetLN fails on 1-channel
input, and ``get_loops`` only knows IPC 1, 10, 20, 30, 40, 50 (use ``--loops`` for others).

The reference's ``utils.py`` imports torchvision (only for downloading MNIST/CIFAR); this script
does not need it, so it puts a stand-in ``torchvision`` module into ``sys.modules`` before the
import (see :func:`_install_torchvision_stand_in`).

Running
-------
::

    python benchmarks/reference.py --ref-dir /path/to/DatasetCondensation --data aal10.h5 \\
        --method dm --ipc 10 --iterations 200 --batch-real 64 --eval-epochs 100 --models 3 \\
        --device cpu --threads 1

writes ``benchmarks/results/reference_<method>_ipc<N>.json`` (or ``--out``) with the test
accuracies of ``--models`` freshly initialised networks trained on the synthetic set (mean and
population std, as the reference prints them) and the seconds per outer iteration of the
distillation loop (evaluation excluded), and prints one table line.

Data: train split (0) is distilled, test split (2) is evaluated, val is unused; images are
standardised with ``ImageSet.normalization_stats()`` (the train mean/std recorded at ingest), as the
reference standardises its torchvision data sets.

Faithfulness notes. Defaults follow the reference: DC ``--init noise --lr-img 0.1``, DSA
``--init real --lr-img 0.1 --dsa-strategy color_crop_cutout_flip_scale_rotate`` (its README
command), DM ``--init real --lr-img 1.0`` with the same DSA strategy; ``lr_net`` 0.01,
``batch_train`` 256, ``dis_metric`` "ours". The reference's ``get_network`` reseeds torch from the
clock for every network, so runs are not bit-reproducible even with ``--seed``. Evaluation happens
once, after the last iteration (the reference's non-"S" eval modes); ``--eval-epochs`` replaces its
300/1000 epochs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REF_URL = "https://github.com/VICO-UoE/DatasetCondensation"
METHOD_DEFAULTS = {  # init, lr_img, dsa_strategy -- the reference's defaults / README commands
    "dc": ("noise", 0.1, "None"),
    "dsa": ("real", 0.1, "color_crop_cutout_flip_scale_rotate"),
    "dm": ("real", 1.0, "color_crop_cutout_flip_scale_rotate"),
}


def _instructions(ref_dir: str | None) -> str:
    where = ref_dir or "/path/to/DatasetCondensation"
    return (
        f"The reference implementation was not found at {ref_dir!r}.\n"
        "Check it out yourself (it is not part of medcondense) and apply the torch-2.x fixes:\n\n"
        f"    git clone {REF_URL} {where}\n"
        f"    cd {where}\n"
        "    sed -i -E 's/\\b(out|x)\\.view\\(\\1\\.size\\(0\\), -1\\)/\\1.reshape(\\1.size(0), -1)/'"
        " networks.py\n"
        "    sed -i -E 's/^(\\s*)([A-Za-z_]+)\\[:\\] = ([A-Za-z_]+)\\[0\\]\\s*$/\\1\\2[:] = \\3[0].clone()/'"
        " utils.py\n"
        "    sed -i 's/^from scipy.ndimage.interpolation import/from scipy.ndimage import/' utils.py\n\n"
        "then pass --ref-dir " + where + " (see the docstring of benchmarks/reference.py)."
    )


class _Unavailable:
    """Stands for ``torchvision.datasets`` / ``torchvision.transforms``: any use raises."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        raise RuntimeError(
            f"torchvision.{self._name}.{attr} was used, but benchmarks/reference.py replaced "
            "torchvision by a stand-in: the harness feeds the reference from a medcondense HDF5 "
            "file and must never reach the reference's torchvision data loading (get_dataset)."
        )


def _install_torchvision_stand_in() -> None:
    """Put a stand-in ``torchvision`` into ``sys.modules`` before importing the reference.

    The reference's utils.py does ``from torchvision import datasets, transforms`` at import time,
    but uses them only in ``get_dataset`` (MNIST/CIFAR downloads), which this harness never calls:
    it reads a medcondense HDF5 file instead. medcondense does not depend on torchvision, and a
    torchvision wheel has to match the torch build exactly (there is none for every torch, e.g.
    2.13 CPU here), so rather than require it we install a module whose ``datasets`` and
    ``transforms`` raise if anything touches them. A real torchvision already imported is kept.
    """
    if "torchvision" in sys.modules:
        return
    stand_in = types.ModuleType("torchvision")
    stand_in.__doc__ = "stand-in installed by medcondense benchmarks/reference.py"
    stand_in.datasets = _Unavailable("datasets")
    stand_in.transforms = _Unavailable("transforms")
    sys.modules["torchvision"] = stand_in


def _import_reference(ref_dir: Path):
    """Import the reference's utils.py (and through it networks.py) from ``ref_dir``."""
    if not (ref_dir / "utils.py").is_file() or not (ref_dir / "networks.py").is_file():
        sys.exit(_instructions(str(ref_dir)))
    _install_torchvision_stand_in()
    for name in ("utils", "networks"):  # generic names: make sure we get the reference's
        sys.modules.pop(name, None)
    sys.path.insert(0, str(ref_dir))
    import utils as ref  # noqa: E402  (the reference's utils.py)

    if Path(ref.__file__).resolve().parent != ref_dir.resolve():
        sys.exit(f"imported utils from {ref.__file__}, not from {ref_dir}: rename the clash")
    return ref


def _patch_warnings(ref_dir: Path) -> list[str]:
    """Which of the documented fixes are missing from the checkout (warned about, not fatal)."""
    missing = []
    nets = (ref_dir / "networks.py").read_text()
    utils_src = (ref_dir / "utils.py").read_text()
    if ".view(out.size(0), -1)" in nets or ".view(x.size(0), -1)" in nets:
        missing.append("networks.py still flattens with .view() (fails on 1-channel images)")
    if "[:] = theta[0]\n" in utils_src or "[:] = randf[0]\n" in utils_src:
        missing.append("utils.py Siamese helpers copy x[0] onto x without .clone()")
    return missing


def _git_commit(ref_dir: Path) -> dict:
    info = {"commit": None, "modified_files": None}
    try:
        info["commit"] = subprocess.run(
            ["git", "-C", str(ref_dir), "rev-parse", "HEAD"], capture_output=True, text=True,
            check=True).stdout.strip()
        info["modified_files"] = subprocess.run(
            ["git", "-C", str(ref_dir), "diff", "--name-only"], capture_output=True, text=True,
            check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def _load(path: str, torch):
    """Train (split 0) and test (split 2) tensors, standardised with the ingest train stats."""
    from medcondense import store

    image_set = store.read(path)
    mean, std = image_set.normalization_stats()

    def standardise(part):
        x = (part.images.astype(np.float32) - mean[None, :, None, None]) / std[None, :, None, None]
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(part.labels.astype(np.int64))

    x_train, y_train = standardise(image_set.part(store.SPLIT_TRAIN))
    x_test, y_test = standardise(image_set.part(store.SPLIT_TEST))
    if len(x_train) == 0 or len(x_test) == 0:
        sys.exit(f"{path}: needs images in the train (0) and test (2) splits")
    return image_set, x_train, y_train, x_test, y_test


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref-dir", default=os.environ.get("MEDCONDENSE_REF_DIR"),
                   help="your checkout of VICO-UoE/DatasetCondensation (or $MEDCONDENSE_REF_DIR)")
    p.add_argument("--data", required=True, help="medcondense HDF5 file (kind real)")
    p.add_argument("--method", choices=("dc", "dsa", "dm"), required=True)
    p.add_argument("--ipc", type=int, default=1, help="images per class")
    p.add_argument("--iterations", type=int, default=20,
                   help="outer iterations (reference: 1000 for DC/DSA, 20000 for DM)")
    p.add_argument("--batch-real", type=int, default=256, help="real images per class per step")
    p.add_argument("--batch-train", type=int, default=256, help="batch size when training nets")
    p.add_argument("--eval-epochs", type=int, default=300,
                   help="epochs to train each evaluation net (reference: 300 or 1000)")
    p.add_argument("--models", type=int, default=5,
                   help="randomly initialised evaluation nets (reference num_eval: 20)")
    p.add_argument("--model", default="ConvNet", help="reference network name (ConvNet, ConvNetBN, ...)")
    p.add_argument("--init", choices=("noise", "real"), default=None,
                   help="synthetic init (default: dc noise, dsa/dm real)")
    p.add_argument("--lr-img", type=float, default=None, help="default: dc/dsa 0.1, dm 1.0")
    p.add_argument("--lr-net", type=float, default=0.01)
    p.add_argument("--dsa-strategy", default=None,
                   help="default: color_crop_cutout_flip_scale_rotate for dsa/dm")
    p.add_argument("--dis-metric", default="ours", choices=("ours", "mse", "cos"))
    p.add_argument("--loops", default=None, metavar="OUTER,INNER",
                   help="override get_loops(ipc) (needed for IPC other than 1,10,20,...,50)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave)")
    p.add_argument("--seed", type=int, default=0, help="numpy/torch seed (see reseeding note)")
    p.add_argument("--out", default=None,
                   help="JSON path (default benchmarks/results/reference_<method>_ipc<N>.json)")
    p.add_argument("--save-synthetic", default=None, metavar="NPZ",
                   help="also save the synthetic images (standardised) and labels as .npz")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args_cli = parse_args(argv)
    if not args_cli.ref_dir or not Path(args_cli.ref_dir).is_dir():
        print(_instructions(args_cli.ref_dir), file=sys.stderr)
        return 2
    ref_dir = Path(args_cli.ref_dir)

    import torch
    import torch.nn as nn

    if args_cli.threads:
        torch.set_num_threads(args_cli.threads)
    np.random.seed(args_cli.seed)
    torch.manual_seed(args_cli.seed)
    ref = _import_reference(ref_dir)
    for problem in _patch_warnings(ref_dir):
        print(f"warning: reference checkout unpatched: {problem}; see --help / docstring",
              file=sys.stderr)

    method = args_cli.method
    init, lr_img, dsa_strategy = METHOD_DEFAULTS[method]
    # ``args`` plays the role of the reference's argparse namespace: its functions read it.
    args = argparse.Namespace(
        method={"dc": "DC", "dsa": "DSA", "dm": "DM"}[method],
        dataset="medcondense",  # not 'MNIST': get_daparam then picks no DC eval augmentation
        model=args_cli.model, ipc=args_cli.ipc,
        num_eval=args_cli.models, epoch_eval_train=args_cli.eval_epochs,
        Iteration=args_cli.iterations,
        lr_img=args_cli.lr_img if args_cli.lr_img is not None else lr_img,
        lr_net=args_cli.lr_net, batch_real=args_cli.batch_real, batch_train=args_cli.batch_train,
        init=args_cli.init or init,
        dsa_strategy=args_cli.dsa_strategy or dsa_strategy,
        dis_metric=args_cli.dis_metric,
        device=args_cli.device or ("cuda" if torch.cuda.is_available() else "cpu"),
    )
    if args_cli.loops:
        args.outer_loop, args.inner_loop = (int(v) for v in args_cli.loops.split(","))
    else:
        try:
            args.outer_loop, args.inner_loop = ref.get_loops(args.ipc)
        except SystemExit as exc:
            print(f"{exc}; pass --loops OUTER,INNER", file=sys.stderr)
            return 2
    args.dsa_param = ref.ParamDiffAug()
    if method == "dm":
        args.dsa = args.dsa_strategy not in ("none", "None")
    else:
        args.dsa = method == "dsa"
    device = args.device

    image_set, x_train, y_train, x_test, y_test = _load(args_cli.data, torch)
    channel, h, w = image_set.image_shape
    im_size = (h, w)
    num_classes = image_set.num_classes
    images_all = x_train.to(device)
    indices_class = [np.flatnonzero(y_train.numpy() == c).tolist() for c in range(num_classes)]
    if any(len(ix) == 0 for ix in indices_class):
        sys.exit("every class needs train images")
    testloader = torch.utils.data.DataLoader(ref.TensorDataset(x_test, y_test), batch_size=256,
                                             shuffle=False, num_workers=0)

    def get_images(c, n):  # as in main.py: n random real images of class c
        idx_shuffle = np.random.permutation(indices_class[c])[:n]
        return images_all[idx_shuffle]

    def new_net(name):
        net = ref.get_network(name, channel, num_classes, im_size)
        return net.to(device)  # get_network moves to cuda whenever one exists

    # ---- initialise the synthetic data (main.py / main_DM.py)
    image_syn = torch.randn(size=(num_classes * args.ipc, channel, h, w), dtype=torch.float,
                            requires_grad=True, device=device)
    label_syn = torch.as_tensor(np.repeat(np.arange(num_classes), args.ipc), dtype=torch.long,
                                device=device)
    if args.init == "real":
        for c in range(num_classes):
            image_syn.data[c * args.ipc:(c + 1) * args.ipc] = get_images(c, args.ipc).detach().data
    optimizer_img = torch.optim.SGD([image_syn], lr=args.lr_img, momentum=0.5)
    optimizer_img.zero_grad()
    criterion = nn.CrossEntropyLoss().to(device)

    print(f"reference {args.method} on {args_cli.data}: {num_classes} classes, {channel}x{h}x{w}, "
          f"train {len(x_train)}, test {len(x_test)}; ipc {args.ipc}, iterations {args.Iteration}, "
          f"loops {args.outer_loop}/{args.inner_loop}, init {args.init}, lr_img {args.lr_img}, "
          f"dsa {args.dsa} ({args.dsa_strategy}), device {device}", flush=True)

    # ---- distillation: iterations 0..Iteration-1 (the reference runs Iteration+1 updates, the
    # last one after its final evaluation, so it does not change the evaluated set)
    iter_times, loss_hist = [], []
    t_start = time.perf_counter()
    for it in range(args.Iteration):
        t0 = time.perf_counter()
        net = new_net(args.model)
        net.train()
        if method in ("dc", "dsa"):
            loss_avg = _dc_iteration(ref, args, net, image_syn, label_syn, optimizer_img, criterion,
                                     get_images, num_classes, channel, im_size, torch)
            loss_avg /= num_classes * args.outer_loop
        else:
            loss_avg = _dm_iteration(ref, args, net, image_syn, optimizer_img, get_images,
                                     num_classes, channel, im_size, torch)
            loss_avg /= num_classes
        iter_times.append(time.perf_counter() - t0)
        loss_hist.append(loss_avg)
        if it % 10 == 0 or it == args.Iteration - 1 or iter_times[-1] > 5.0:
            print(f"{ref.get_time()} iter = {it:05d}, loss = {loss_avg:.4f}, "
                  f"{iter_times[-1]:.3f} s", flush=True)
    t_distill = time.perf_counter() - t_start

    # ---- evaluation (main.py's eval block at it == Iteration)
    if args.dsa:
        args.dc_aug_param = None
    else:
        args.dc_aug_param = ref.get_daparam(args.dataset, args.model, args.model, args.ipc)
    eval_model = args.model
    accs = []
    t0 = time.perf_counter()
    for it_eval in range(args.num_eval):
        net_eval = new_net(eval_model)
        image_syn_eval = copy.deepcopy(image_syn.detach())
        label_syn_eval = copy.deepcopy(label_syn.detach())
        _, _, acc_test = ref.evaluate_synset(it_eval, net_eval, image_syn_eval, label_syn_eval,
                                             testloader, args)
        accs.append(float(acc_test))
    t_eval = time.perf_counter() - t0

    if args_cli.save_synthetic:
        np.savez_compressed(args_cli.save_synthetic, images=image_syn.detach().cpu().numpy(),
                            labels=label_syn.cpu().numpy(), mean=image_set.normalization_stats()[0],
                            std=image_set.normalization_stats()[1])

    mean_acc, std_acc = float(np.mean(accs)), float(np.std(accs))
    sec_it = t_distill / max(args.Iteration, 1)
    result = {
        "implementation": "reference",
        "reference": {"url": REF_URL, "dir": str(ref_dir.resolve()), **_git_commit(ref_dir)},
        "method": method, "ipc": args.ipc, "model": args.model,
        "data": {"path": str(Path(args_cli.data).resolve()),
                 "content_hash": image_set.attrs.get("content_hash"),
                 "num_classes": num_classes, "image_shape": [channel, h, w],
                 "n_train": len(x_train), "n_test": len(x_test)},
        "budget": {"iterations": args.Iteration, "batch_real": args.batch_real,
                   "batch_train": args.batch_train, "eval_epochs": args.epoch_eval_train,
                   "models": args.num_eval, "outer_loop": args.outer_loop,
                   "inner_loop": args.inner_loop},
        "hyper": {"init": args.init, "lr_img": args.lr_img, "lr_net": args.lr_net,
                  "dsa": args.dsa, "dsa_strategy": args.dsa_strategy,
                  "dis_metric": args.dis_metric, "dc_aug_param": args.dc_aug_param,
                  "seed": args_cli.seed},
        "accuracy": {"mean": mean_acc, "std": std_acc, "per_model": accs},
        "seconds_per_iteration": sec_it,
        "seconds_per_iteration_median": float(np.median(iter_times)) if iter_times else None,
        "seconds_distill": t_distill, "seconds_eval": t_eval,
        "final_loss": loss_hist[-1] if loss_hist else None,
        "machine": {"device": device, "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                    "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None},
    }
    out = Path(args_cli.out or REPO / "benchmarks" / "results" / f"reference_{method}_ipc{args.ipc}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| reference | {method} | {args.ipc} | {Path(args_cli.data).name} | "
          f"{100 * mean_acc:.2f} ± {100 * std_acc:.2f} | {sec_it:.3f} | "
          f"it={args.Iteration} br={args.batch_real} ep={args.epoch_eval_train} "
          f"n={args.num_eval} {device} |")
    print(f"wrote {out}")
    return 0


def _dc_iteration(ref, args, net, image_syn, label_syn, optimizer_img, criterion, get_images,
                  num_classes, channel, im_size, torch):
    """One outer iteration of main.py (DC, or DSA when ``args.dsa``); returns the summed loss."""
    net_parameters = list(net.parameters())
    optimizer_net = torch.optim.SGD(net.parameters(), lr=args.lr_net)
    optimizer_net.zero_grad()
    loss_avg = 0.0
    args.dc_aug_param = None  # no DC augmentation while learning the synthetic data (as main.py)
    for ol in range(args.outer_loop):
        # freeze the BatchNorm statistics on a real batch (16 per class), as main.py
        if any("BatchNorm" in m._get_name() for m in net.modules()):
            img_real = torch.cat([get_images(c, 16) for c in range(num_classes)], dim=0)
            net.train()
            net(img_real)
            for module in net.modules():
                if "BatchNorm" in module._get_name():
                    module.eval()

        loss = torch.tensor(0.0).to(args.device)
        for c in range(num_classes):
            img_real = get_images(c, args.batch_real)
            lab_real = torch.ones((img_real.shape[0],), device=args.device, dtype=torch.long) * c
            img_syn = image_syn[c * args.ipc:(c + 1) * args.ipc].reshape(
                (args.ipc, channel, im_size[0], im_size[1]))
            lab_syn = torch.ones((args.ipc,), device=args.device, dtype=torch.long) * c
            if args.dsa:
                seed = int(time.time() * 1000) % 100000
                img_real = ref.DiffAugment(img_real, args.dsa_strategy, seed=seed, param=args.dsa_param)
                img_syn = ref.DiffAugment(img_syn, args.dsa_strategy, seed=seed, param=args.dsa_param)
            loss_real = criterion(net(img_real), lab_real)
            gw_real = torch.autograd.grad(loss_real, net_parameters)
            gw_real = [g.detach().clone() for g in gw_real]
            loss_syn = criterion(net(img_syn), lab_syn)
            gw_syn = torch.autograd.grad(loss_syn, net_parameters, create_graph=True)
            loss += ref.match_loss(gw_syn, gw_real, args)

        optimizer_img.zero_grad()
        loss.backward()
        optimizer_img.step()
        loss_avg += loss.item()
        if ol == args.outer_loop - 1:
            break

        # update the network on the current synthetic data
        image_syn_train = copy.deepcopy(image_syn.detach())
        label_syn_train = copy.deepcopy(label_syn.detach())
        trainloader = torch.utils.data.DataLoader(
            ref.TensorDataset(image_syn_train, label_syn_train), batch_size=args.batch_train,
            shuffle=True, num_workers=0)
        for _ in range(args.inner_loop):
            ref.epoch("train", trainloader, net, optimizer_net, criterion, args, aug=bool(args.dsa))
    return loss_avg


def _dm_iteration(ref, args, net, image_syn, optimizer_img, get_images, num_classes, channel,
                  im_size, torch):
    """One iteration of main_DM.py; returns the summed loss."""
    for param in net.parameters():
        param.requires_grad = False
    embed = net.module.embed if hasattr(net, "module") else net.embed  # DataParallel
    loss = torch.tensor(0.0).to(args.device)
    def class_batches(c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """main_DM.py's real and synthetic batch of class c, DSA-augmented with one shared seed."""
        img_real = get_images(c, args.batch_real)
        img_syn = image_syn[c * args.ipc:(c + 1) * args.ipc].reshape(
            (args.ipc, channel, im_size[0], im_size[1]))
        if args.dsa:
            seed = int(time.time() * 1000) % 100000
            img_real = ref.DiffAugment(img_real, args.dsa_strategy, seed=seed, param=args.dsa_param)
            img_syn = ref.DiffAugment(img_syn, args.dsa_strategy, seed=seed, param=args.dsa_param)
        return img_real, img_syn

    if "BN" not in args.model:  # ConvNet: per class
        for c in range(num_classes):
            img_real, img_syn = class_batches(c)
            output_real = embed(img_real).detach()
            output_syn = embed(img_syn)
            loss += torch.sum((torch.mean(output_real, dim=0) - torch.mean(output_syn, dim=0)) ** 2)
    else:  # ConvNetBN: all classes in one batch
        reals, syns = zip(*(class_batches(c) for c in range(num_classes)))
        output_real = embed(torch.cat(reals, dim=0)).detach()
        output_syn = embed(torch.cat(syns, dim=0))
        # as main_DM.py: assumes every class has >= batch_real train images
        loss += torch.sum((torch.mean(output_real.reshape(num_classes, args.batch_real, -1), dim=1)
                           - torch.mean(output_syn.reshape(num_classes, args.ipc, -1), dim=1)) ** 2)
    optimizer_img.zero_grad()
    loss.backward()
    optimizer_img.step()
    return loss.item()


if __name__ == "__main__":
    sys.exit(main())

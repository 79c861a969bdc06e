"""Run the *reference* MTT code (GeorgeCazenavette/mtt-distillation) on medcondense HDF5 files.

The fidelity yardstick of issue #12, like ``benchmarks/reference.py`` for DC/DSA/DM: the same
data and budget, the authors' own networks (``get_network``), augmentation (``DiffAugment``,
``ParamDiffAug``), expert training (``epoch``), student reparametrization (``ReparamModule``)
and evaluation (``evaluate_synset``). The reference is **not** part of medcondense; check it out
yourself. This script re-implements only the *driver* loops of ``buffer.py`` and ``distill.py``
(reading our HDF5 file instead of torchvision, without wandb, with a reduced budget).

Each half is checked on its own: the experts can come from the reference (``--experts-from
reference``: ``buffer.py``'s loop, written into a ``medcondense-experts/1`` file so ours can
distil from them too) or from medcondense (``--experts-from ours --experts FILE``: our file, read
by the reference's distillation loop).

Getting the reference (once)
----------------------------
::

    git clone https://github.com/GeorgeCazenavette/mtt-distillation /path/to/mtt-distillation
    cd /path/to/mtt-distillation && git checkout 50dccea47ba48b9cfb3b9c59375d7da92e4e603b
    # the same torch-2 fixes as DatasetCondensation (benchmarks/reference.py):
    sed -i -E 's/\\b(out|x)\\.view\\(\\1\\.size\\(0\\), -1\\)/\\1.reshape(\\1.size(0), -1)/' networks.py
    sed -i -E 's/^(\\s*)([A-Za-z_]+)\\[:\\] = ([A-Za-z_]+)\\[0\\]\\s*$/\\1\\2[:] = \\3[0].clone()/' utils.py
    sed -i 's/^from scipy.ndimage.interpolation import/from scipy.ndimage import/' utils.py

``utils.py`` imports torchvision and kornia (data loading and ZCA only); this script installs
stand-ins (torchvision's raise if anything touches them; kornia's and tqdm's only when they are
not installed). ZCA is off (medcondense does not whiten).

Running
-------
::

    python benchmarks/reference_mtt.py --ref-dir /path/to/mtt-distillation --data aal10.h5 --ipc 1 \\
        --experts-from reference --num-experts 3 --train-epochs 8 --iterations 20 --syn-steps 5 \\
        --expert-epochs 2 --max-start-epoch 5 --eval-epochs 100 --models 3 \\
        --save-experts ref_experts.h5

writes ``benchmarks/results/reference_mtt_ipc<N>_<experts-from>.json`` (or ``--out``): the test
accuracies of ``--models`` ConvNets trained on the synthetic set at the learned step size with DSA
(as ``distill.py`` evaluates), seconds per expert epoch and per MTT iteration, the learned lr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import _git_commit, _install_torchvision_stand_in, _load  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REF_COMMIT = "50dccea47ba48b9cfb3b9c59375d7da92e4e603b"
STRATEGY = "color_crop_cutout_flip_scale_rotate"


def _install_kornia_and_tqdm_stand_ins() -> None:
    """utils.py imports kornia (ZCA only; off here) and tqdm (progress bars): stand-ins when missing."""
    try:
        import kornia  # noqa: F401
    except ImportError:
        import importlib.machinery

        kornia_stand_in = types.ModuleType("kornia")
        kornia_stand_in.__spec__ = importlib.machinery.ModuleSpec("kornia", None)
        sys.modules["kornia"] = kornia_stand_in
    try:
        import tqdm  # noqa: F401
    except ImportError:
        import importlib.machinery

        stand_in = types.ModuleType("tqdm")
        stand_in.__spec__ = importlib.machinery.ModuleSpec("tqdm", None)  # torch._dynamo probes specs
        stand_in.tqdm = lambda iterable=None, *args, **kwargs: iterable  # no progress bar
        sys.modules["tqdm"] = stand_in


def _import_reference(ref_dir: Path):
    for name in ("utils", "networks", "reparam_module"):
        sys.modules.pop(name, None)
    if not (ref_dir / "distill.py").is_file() or not (ref_dir / "reparam_module.py").is_file():
        sys.exit(f"no mtt-distillation checkout at {ref_dir} (see the docstring of benchmarks/reference_mtt.py)")
    _install_torchvision_stand_in()
    _install_kornia_and_tqdm_stand_ins()
    sys.path.insert(0, str(ref_dir))
    import reparam_module  # noqa: E402
    import utils as ref  # noqa: E402

    if Path(ref.__file__).resolve().parent != ref_dir.resolve():
        sys.exit(f"imported utils from {ref.__file__}, not from {ref_dir}")
    return ref, reparam_module.ReparamModule


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref-dir", type=Path, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--experts-from", choices=["reference", "ours"], default="reference")
    p.add_argument("--experts", help="our expert file (with --experts-from ours)")
    p.add_argument("--save-experts", help="write the reference's experts here (medcondense-experts/1)")
    p.add_argument("--num-experts", type=int, default=3)
    p.add_argument("--train-epochs", type=int, default=8)
    p.add_argument("--lr-teacher", type=float, default=0.01)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--syn-steps", type=int, default=5)
    p.add_argument("--expert-epochs", type=int, default=2)
    p.add_argument("--max-start-epoch", type=int, default=5)
    p.add_argument("--lr-img", type=float, default=1000.0)
    p.add_argument("--lr-lr", type=float, default=1e-5)
    p.add_argument("--batch-syn", type=int, default=None)
    p.add_argument("--eval-epochs", type=int, default=100)
    p.add_argument("--models", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def _args_namespace(a: argparse.Namespace, channel: int, im_size, num_classes: int):
    """The attribute bag the reference's functions read (``args.device``, ``args.dsa`` ...)."""
    ns = types.SimpleNamespace(
        device=a.device, dsa=True, dsa_strategy=STRATEGY, dataset="medcondense", batch_train=256,
        epoch_eval_train=a.eval_epochs, lr_net=a.lr_teacher, im_size=im_size, zca=False, texture=False,
        dc_aug_param=None,
    )
    return ns


def train_reference_experts(ref, args_ns, a, x_train, y_train, x_test, y_test, channel, num_classes, im_size, torch):
    """``buffer.py``'s loop: SGD(lr_teacher, momentum 0, wd 0), DSA per batch, a snapshot per epoch."""
    args_ns.dsa_param = ref.ParamDiffAug()
    criterion = torch.nn.CrossEntropyLoss()
    trainloader = torch.utils.data.DataLoader(ref.TensorDataset(x_train, y_train), batch_size=256, shuffle=True, num_workers=0)
    testloader = torch.utils.data.DataLoader(ref.TensorDataset(x_test, y_test), batch_size=256, shuffle=False, num_workers=0)
    trajectories, losses, accs, epoch_seconds = [], [], [], []
    for _ in range(a.num_experts):
        net = ref.get_network("ConvNet", channel, num_classes, im_size).to(a.device)
        net.train()
        optim = torch.optim.SGD(net.parameters(), lr=a.lr_teacher, momentum=0, weight_decay=0)
        snaps = [torch.cat([p.detach().cpu().reshape(-1) for p in net.parameters()])]
        e_loss, e_acc = [], []
        for _ in range(a.train_epochs):
            t0 = time.perf_counter()
            loss, acc = ref.epoch("train", dataloader=trainloader, net=net, optimizer=optim, criterion=criterion, args=args_ns, aug=True)
            epoch_seconds.append(time.perf_counter() - t0)
            ref.epoch("test", dataloader=testloader, net=net, optimizer=None, criterion=criterion, args=args_ns, aug=False)
            snaps.append(torch.cat([p.detach().cpu().reshape(-1) for p in net.parameters()]))
            e_loss.append(loss)
            e_acc.append(acc)
        trajectories.append(torch.stack(snaps).numpy())
        losses.append(np.asarray(e_loss, np.float32))
        accs.append(np.asarray(e_acc, np.float32))
    return trajectories, losses, accs, float(np.mean(epoch_seconds))


def _save_as_ours(path, a, trajectories, losses, accs, image_set, channel, num_classes, im_size, torch):
    """Write the reference's experts as a medcondense-experts/1 file (so ours can distil from them)."""
    from medcondense import store
    from medcondense.distill.experts import ExpertSettings, assemble, experts_key, part_path, write_part
    from medcondense.nets import ConvNet

    path = Path(path)
    source_hash = str(image_set.attrs.get("content_hash") or store.content_hash(image_set))
    settings = ExpertSettings(num_experts=a.num_experts, train_epochs=a.train_epochs, lr_teacher=a.lr_teacher,
                              aug=tuple(STRATEGY.split("_")), seed=-1)  # seed -1: the reference's clock seeding
    key = experts_key(source_hash, settings) + "-reference"
    for e, (t, l, acc) in enumerate(zip(trajectories, losses, accs)):
        write_part(part_path(path, e), key, t.astype(np.float32), l, acc)
    net = ConvNet(channel, num_classes, im_size[0])
    names = [n for n, _ in net.named_parameters()]
    shapes = [list(p.shape) for p in net.parameters()]
    assemble(path, key, settings, source_hash, list(image_set.class_names), names, shapes,
             torch.zeros(1, channel, *im_size), time.time())
    import shutil

    shutil.rmtree(path.with_name(path.name + ".parts"), ignore_errors=True)


def distill_reference(ref, ReparamModule, args_ns, a, buffer, x_train, y_train, channel, num_classes, im_size, torch):
    """``distill.py``'s loop (no wandb, no texture, no ZCA), experts drawn uniformly (``--load_all``)."""
    args_ns.dsa_param = ref.ParamDiffAug()
    indices_class = [np.flatnonzero(y_train.numpy() == c) for c in range(num_classes)]
    label_syn = torch.arange(num_classes).repeat_interleave(a.ipc).to(a.device)
    image_syn = torch.cat([x_train[np.random.permutation(indices_class[c])[: a.ipc]] for c in range(num_classes)])
    image_syn = image_syn.detach().to(a.device).requires_grad_(True)
    syn_lr = torch.tensor(a.lr_teacher).to(a.device).requires_grad_(True)
    optimizer_img = torch.optim.SGD([image_syn], lr=a.lr_img, momentum=0.5)
    optimizer_lr = torch.optim.SGD([syn_lr], lr=a.lr_lr, momentum=0.5)
    criterion = torch.nn.CrossEntropyLoss()
    batch_syn = a.batch_syn or num_classes * a.ipc
    seconds, curve = [], []
    for it in range(a.iterations + 1):
        t0 = time.perf_counter()
        student_net = ReparamModule(ref.get_network("ConvNet", channel, num_classes, im_size, dist=False).to(a.device))
        student_net.train()
        num_params = sum(np.prod(p.size()) for p in student_net.parameters())
        trajectory = buffer[np.random.randint(0, len(buffer))]
        start_epoch = np.random.randint(0, a.max_start_epoch)
        starting = torch.as_tensor(trajectory[start_epoch]).to(a.device)
        target = torch.as_tensor(trajectory[start_epoch + a.expert_epochs]).to(a.device)
        student_params = [starting.clone().requires_grad_(True)]
        chunks = []
        for _ in range(a.syn_steps):
            if not chunks:
                chunks = list(torch.split(torch.randperm(len(image_syn)), batch_syn))
            these = chunks.pop()
            x = ref.DiffAugment(image_syn[these], STRATEGY, param=args_ns.dsa_param)
            out = student_net(x, flat_param=student_params[-1])
            grad = torch.autograd.grad(criterion(out, label_syn[these]), student_params[-1], create_graph=True)[0]
            student_params.append(student_params[-1] - syn_lr * grad)
        loss = torch.nn.functional.mse_loss(student_params[-1], target, reduction="sum") / num_params
        loss = loss / (torch.nn.functional.mse_loss(starting, target, reduction="sum") / num_params)
        optimizer_img.zero_grad()
        optimizer_lr.zero_grad()
        loss.backward()
        optimizer_img.step()
        optimizer_lr.step()
        seconds.append(time.perf_counter() - t0)
        curve.append([it, float(loss.detach()), float(syn_lr.detach())])  # the reference has no guard on syn_lr
        del student_params
    return image_syn.detach(), label_syn, float(syn_lr.detach()), float(np.mean(seconds[1:] or seconds)), curve


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    ref, ReparamModule = _import_reference(a.ref_dir)
    image_set, x_train, y_train, x_test, y_test = _load(a.data, torch)
    channel, num_classes = image_set.image_shape[0], image_set.num_classes
    im_size = tuple(image_set.image_shape[1:])
    args_ns = _args_namespace(a, channel, im_size, num_classes)
    expert_epoch_s = None
    if a.experts_from == "reference":
        trajectories, losses, accs, expert_epoch_s = train_reference_experts(
            ref, args_ns, a, x_train, y_train, x_test, y_test, channel, num_classes, im_size, torch)
        buffer = trajectories
        if a.save_experts:
            _save_as_ours(a.save_experts, a, trajectories, losses, accs, image_set, channel, num_classes, im_size, torch)
    else:
        from medcondense.distill.experts import open_experts

        if not a.experts:
            sys.exit("--experts-from ours needs --experts FILE")
        experts = open_experts(a.experts)
        buffer = [[experts.snapshot(e, k).numpy() for k in range(experts.num_epochs + 1)] for e in range(experts.num_experts)]
    images, labels, learned_lr, mtt_s, curve = distill_reference(
        ref, ReparamModule, args_ns, a, buffer, x_train, y_train, channel, num_classes, im_size, torch)
    args_ns.lr_net = learned_lr  # distill.py evaluates at the learned step size
    args_ns.dsa_param = ref.ParamDiffAug()
    testloader = torch.utils.data.DataLoader(ref.TensorDataset(x_test, y_test), batch_size=256, shuffle=False, num_workers=0)
    accs = []
    for i in range(a.models):
        net = ref.get_network("ConvNet", channel, num_classes, im_size).to(a.device)
        _, _, acc = ref.evaluate_synset(i, net, images, labels, testloader, args_ns)
        accs.append(float(acc))
    result = {
        "reference": {"repo": "GeorgeCazenavette/mtt-distillation", "expected_commit": REF_COMMIT, **_git_commit(a.ref_dir)},
        "data": a.data, "ipc": a.ipc, "experts_from": a.experts_from, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)), "accuracies": accs,
        "learned_lr": learned_lr, "seconds_per_mtt_iteration": mtt_s, "seconds_per_expert_epoch": expert_epoch_s,
        "loss_first": curve[0][1], "loss_last": curve[-1][1],
        # the step size after each update: the reference never checks it, so a run may go on with lr <= 0
        "lr_curve": [c[2] for c in curve], "lr_min": min(c[2] for c in curve),
        "lr_nonpositive_updates": sum(1 for c in curve if not c[2] > 0),
    }
    out = a.out or RESULTS / f"reference_mtt_ipc{a.ipc}_{a.experts_from}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"reference MTT ipc {a.ipc} experts {a.experts_from}: acc {result['accuracy_mean']:.4f} ± {result['accuracy_std']:.4f}, "
          f"lr {learned_lr:.5f}, {mtt_s:.2f} s/iteration, {expert_epoch_s or float('nan'):.2f} s/expert epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())

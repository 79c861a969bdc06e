"""distill/accelerate.py: autocast, torch.compile and its fall-back to eager."""

from __future__ import annotations

import logging

import pytest
import torch

from medcondense.distill.accelerate import MaybeCompiled, _canonical_strides, autocast
from medcondense.nets import ConvNet


def test_autocast_bf16_rounds_and_off_does_not():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "off"):
        assert (a @ b).dtype == torch.float32


def test_canonical_strides_fix_size_one_dimensions_without_copying():
    x = torch.randn(5, 8, 8, 1).permute(0, 3, 1, 2)  # 1-channel batch with channel stride 1
    assert x.is_contiguous() and x.stride() == (64, 1, 8, 1)
    y = _canonical_strides(x)
    assert y.stride() == (64, 64, 8, 1) and y.data_ptr() == x.data_ptr()
    z = _canonical_strides(torch.randn(8, 8, 5).permute(2, 0, 1))  # truly strided: copied
    assert z.stride() == (64, 8, 1)


def _loss(net, x, y):
    return torch.nn.functional.cross_entropy(net(x), y)


def test_compiled_loss_and_gradients_match_eager_on_fresh_networks():
    x, y = torch.randn(6, 1, 12, 12), torch.tensor([0, 1, 2, 0, 1, 2])
    compiled = MaybeCompiled(_loss, enabled=True)
    for seed in (0, 1):  # a fresh network of the same shape reuses the compiled code
        torch.manual_seed(seed)
        net = ConvNet(1, 3, 12, width=8)
        params = [p for p in net.parameters() if p.dim() > 1]
        expected = torch.autograd.grad(_loss(net, x, y), params)
        got = torch.autograd.grad(compiled(net, x, y), params)
        assert compiled.compiled is not None, "compile fell back to eager on this machine"
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_compiler_failure_falls_back_to_eager_with_one_warning(caplog):
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()

    def doubled_plus_one(x):  # a function of its own, so no compiled code is cached for it
        return torch.relu(x) * 2 + 1

    fn = MaybeCompiled(doubled_plus_one, enabled=True)
    x = torch.randn(3, 5)
    # no C++ compiler (and no cached build to fall back on): what a machine without g++ sees
    no_compiler = {"cpp.cxx": (None, "/nonexistent/medcondense-test-g++"), "fx_graph_cache": False}
    with inductor_config.patch(no_compiler), caplog.at_level(logging.WARNING, logger="medcondense.distill.accelerate"):
        first, second = fn(x), fn(x)
    assert torch.equal(first, doubled_plus_one(x)) and torch.equal(second, first)
    assert fn.compiled is None
    warnings = [r for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1 and "--compile off" in warnings[0].getMessage()
    torch._dynamo.reset()


def test_out_of_memory_is_not_swallowed():
    def out_of_memory(x):
        raise torch.OutOfMemoryError("no room")

    fn = MaybeCompiled(out_of_memory, enabled=True)
    with pytest.raises(torch.OutOfMemoryError):
        fn(torch.zeros(1))
    assert fn.compiled is not None, "an out-of-memory error is the run's problem, not the compiler's"


def test_varying_batch_sizes_do_not_recompile_every_time():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()

    def scaled_sum(x):
        return (x * 3).sum(dim=1)

    fn = MaybeCompiled(scaled_sum, enabled=True)
    for n in (8, 5, 7, 3, 6, 4, 2, 9, 11, 13):  # more sizes than dynamo's recompile limit (8)
        torch.testing.assert_close(fn(torch.ones(n, 4)), torch.full((n,), 12.0))
    assert fn.compiled is not None
    assert counters["stats"]["unique_graphs"] <= 2, "a static graph, then one with a dynamic batch size"
    torch._dynamo.reset()

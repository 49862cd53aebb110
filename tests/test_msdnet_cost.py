"""``msdnet_flax.model.cost.cost`` against an independent count and against the paper.

The independent count runs the PyTorch twin with forward hooks on every leaf module and applies
kalviny/MSDNet-PyTorch ``op_counter.py``'s rules to the tensors that actually flow, in the order
kalviny's ``MSDNet.forward`` runs them (block 0, classifier 0, block 1, classifier 1, ...):

* Conv2d: ``c_in * c_out * kh * kw * h_out * w_out / groups`` multiply-adds; its weight (and
  bias) are parameters;
* ReLU: one op per input element;
* AvgPool2d: ``C * h_out * w_out * k * k``;
* Linear: ``weight.numel() + bias.numel()`` ops and parameters;
* BatchNorm2d: no ops, its weight and bias are parameters; MaxPool2d: nothing (``op_counter``
  has no rule for it);

cumulative, recorded at each Linear (each exit). It shares nothing with ``cost`` but the twin.
"""

from __future__ import annotations

import pytest
import torch

from msdnet_flax.interop.pytorch import TorchMSDNet
from msdnet_flax.model import presets as configs
from msdnet_flax.model.cost import ExitCost, cost

# Huang et al. (ICLR 2018) / kalviny's README: MSDNet on ImageNet, step 4, per-exit GFLOPs.
PAPER_IMAGENET_STEP4_GFLOPS = [0.339, 0.685, 1.007, 1.254, 1.360]


def op_counter_hooks(model: TorchMSDNet, image_size: int) -> list[tuple[int, int]]:
    """(cumulative multiply-adds, cumulative parameters) at each exit, by forward hooks."""
    totals = {"ops": 0, "params": 0}
    exits: list[tuple[int, int]] = []
    calls: dict[torch.nn.Module, int] = {}

    def n_params(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters(recurse=False))

    def hook(m: torch.nn.Module, inputs, output) -> None:
        x = inputs[0]
        calls[m] = calls.get(m, 0) + 1
        ops = 0
        if isinstance(m, torch.nn.Conv2d):
            c_in, c_out = x.shape[1], output.shape[1]
            kh, kw = m.kernel_size
            ops = c_in * c_out * kh * kw * output.shape[2] * output.shape[3] / m.groups
        elif isinstance(m, torch.nn.ReLU):
            ops = x.numel()
        elif isinstance(m, torch.nn.AvgPool2d):
            k = m.kernel_size
            assert isinstance(k, int)
            ops = x.shape[1] * output.shape[2] * output.shape[3] * k * k
        elif isinstance(m, torch.nn.Linear):
            ops = m.weight.numel() + m.bias.numel()
        elif not isinstance(m, (torch.nn.BatchNorm2d, torch.nn.MaxPool2d)):
            raise TypeError(f"op_counter has no rule for {type(m).__name__}")
        totals["ops"] += ops
        totals["params"] += n_params(m)
        if isinstance(m, torch.nn.Linear):
            exits.append((totals["ops"], totals["params"]))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            xs = torch.randn(1, 3, image_size, image_size)  # op_counter measures batch 1
            for k, block in enumerate(model.blocks):
                xs = block(xs)
                model.classify(k, xs[-1])
    finally:
        for h in handles:
            h.remove()
    # Every leaf ran exactly once, so every parameter was counted exactly once.
    assert all(calls.get(m) == 1 for m in leaves), "a leaf module ran zero or several times"
    assert totals["params"] == sum(p.numel() for p in model.parameters())
    return [(round(ops), params) for ops, params in exits]


@pytest.mark.parametrize("name", sorted(configs.PRESETS))
def test_cost_matches_op_counter_rules(name, rng):
    config = configs.get_config(name)
    torch.manual_seed(int(rng.integers(2**31)))  # weights and input: the count ignores values
    counted = op_counter_hooks(TorchMSDNet(config).eval(), config.image_size)
    predicted = cost(config)
    assert len(predicted) == len(counted) == config.n_blocks
    for k, (c, (ops, params)) in enumerate(zip(predicted, counted, strict=True)):
        assert isinstance(c, ExitCost)
        assert c.flops == ops, f"exit {k}: cost() {c.flops} != op_counter {ops} multiply-adds"
        assert c.params == params, f"exit {k}: cost() {c.params} != op_counter {params} params"


@pytest.mark.parametrize("name", sorted(configs.PRESETS))
def test_cost_is_cumulative_and_ends_at_the_whole_network(name):
    config = configs.get_config(name)
    exits = cost(config)
    flops = [e.flops for e in exits]
    params = [e.params for e in exits]
    assert flops == sorted(flops) and len(set(flops)) == len(flops)
    assert params == sorted(params) and len(set(params)) == len(params)
    assert all(isinstance(v, int) for v in flops + params)


def test_paper_imagenet_step4_budget():
    """Each exit's cumulative GFLOPs (multiply-adds) within 1% of the paper's."""
    gflops = [e.flops / 1e9 for e in cost(configs.imagenet_step4())]
    assert gflops == pytest.approx(PAPER_IMAGENET_STEP4_GFLOPS, rel=0.01)


def test_paper_parameter_counts():
    assert cost(configs.imagenet_step4())[-1].params / 1e6 == pytest.approx(23.96, abs=0.005)
    assert cost(configs.cifar100_anytime())[-1].params / 1e6 == pytest.approx(3.07, abs=0.005)

"""Optimisers: every one receives lr and weight decay, momentum only where it exists, ranger round-trips."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from greenshift.config import OPTIMIZERS, DSNNConfig
from greenshift.errors import ConfigError
from greenshift.train import Lookahead, make_optimizer

EXPECTED_CLASS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adadelta": torch.optim.Adadelta,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "radam": torch.optim.RAdam,
}


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
    optimizer.zero_grad()
    inputs = torch.randn(5, 4, generator=generator)
    model(inputs).square().mean().backward()
    optimizer.step()


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    return optimizer.base if isinstance(optimizer, Lookahead) else optimizer


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_gets_lr_and_weight_decay(name: str) -> None:
    config = DSNNConfig(optimizer=name, lr=0.0123, weight_decay=0.0456, momentum=0.77)
    optimizer = make_optimizer(config, _model().parameters())
    inner = _inner(optimizer)
    if name == "ranger":
        assert type(inner) is torch.optim.RAdam
    else:
        assert type(optimizer) is EXPECTED_CLASS[name]
    for group in optimizer.param_groups:
        assert group["lr"] == 0.0123
        assert group["weight_decay"] == 0.0456
    # Momentum reaches exactly the optimisers that have one.
    momenta = {group.get("momentum") for group in inner.param_groups}
    assert momenta == ({0.77} if config.uses_momentum else {None})


def test_sgd_momentum_is_classical_not_nesterov() -> None:
    optimizer = make_optimizer(DSNNConfig(optimizer="sgd", momentum=0.5), _model().parameters())
    assert optimizer.param_groups[0]["nesterov"] is False
    assert optimizer.param_groups[0]["momentum"] == 0.5


def test_ranger_is_lookahead_k6_alpha_half() -> None:
    optimizer = make_optimizer(DSNNConfig(optimizer="ranger"), _model().parameters())
    assert isinstance(optimizer, Lookahead)
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert (optimizer.k, optimizer.alpha) == (6, 0.5)
    # One shared set of groups: a scheduler changing the lr changes the inner optimiser's lr.
    assert optimizer.param_groups is optimizer.base.param_groups


def test_lookahead_interpolates_every_k_steps() -> None:
    torch.manual_seed(1)
    model = _model()
    twin = _model()
    twin.load_state_dict(model.state_dict())
    initial = [p.detach().clone() for p in model.parameters()]
    look = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=3, alpha=0.25)
    plain = torch.optim.SGD(twin.parameters(), lr=0.1)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(2):
        _step(model, look, gen_a)
        _step(twin, plain, gen_b)
    # Before the k-th step Lookahead is just the inner optimiser.
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
    _step(model, look, gen_a)
    _step(twin, plain, gen_b)
    for p, fast, start in zip(model.parameters(), twin.parameters(), initial, strict=True):
        torch.testing.assert_close(p.detach(), start + 0.25 * (fast.detach() - start), rtol=0, atol=1e-7)


def test_ranger_state_dict_round_trip_continues_identically() -> None:
    config = DSNNConfig(optimizer="ranger", lr=0.01)
    torch.manual_seed(2)
    model = _model()
    optimizer = make_optimizer(config, model.parameters())
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        _step(model, optimizer, generator)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    # state_dict() shares live tensors (as in torch); a checkpoint serialises it at once.
    saved_opt = copy.deepcopy(optimizer.state_dict())
    saved_gen = generator.get_state()
    for _ in range(5):  # crosses a k=6 boundary
        _step(model, optimizer, generator)
    expected = [p.detach().clone() for p in model.parameters()]

    fresh = _model()
    fresh.load_state_dict(saved_model)
    resumed = make_optimizer(config, fresh.parameters())
    resumed.load_state_dict(saved_opt)
    generator.set_state(saved_gen)
    for _ in range(5):
        _step(fresh, resumed, generator)
    for a, b in zip(fresh.parameters(), expected, strict=True):
        assert torch.equal(a.detach(), b)


def test_lookahead_state_survives_torch_save(tmp_path) -> None:
    model = _model()
    optimizer = make_optimizer(DSNNConfig(optimizer="ranger"), model.parameters())
    _step(model, optimizer, torch.Generator().manual_seed(0))
    torch.save(optimizer.state_dict(), tmp_path / "opt.pt")
    loaded = torch.load(tmp_path / "opt.pt", weights_only=True)
    other = make_optimizer(DSNNConfig(optimizer="ranger"), model.parameters())
    other.load_state_dict(loaded)
    assert other.steps == 1
    assert all(torch.equal(a, b) for a, b in zip(other.slow, optimizer.slow, strict=True))


def test_lookahead_rejects_foreign_state_and_bad_settings() -> None:
    model = _model()
    optimizer = make_optimizer(DSNNConfig(optimizer="ranger"), model.parameters())
    with pytest.raises(ConfigError):
        optimizer.load_state_dict(torch.optim.SGD(model.parameters(), lr=0.1).state_dict())
    with pytest.raises(ConfigError):
        Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=0)
    with pytest.raises(ConfigError):
        Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), alpha=1.5)


def test_lambda_scheduler_drives_lookahead_lr() -> None:
    optimizer = make_optimizer(DSNNConfig(optimizer="ranger", lr=0.2), _model().parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 0.5 * (1 + math.cos(math.pi * e / 4)))
    optimizer.step()
    scheduler.step()
    assert optimizer.base.param_groups[0]["lr"] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi / 4)))

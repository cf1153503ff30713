"""Optimisers of the search space, including Ranger (Lookahead over RAdam) written here.

Every optimiser receives ``lr`` and ``weight_decay``; ``momentum`` is passed only to the optimisers that
have one (:data:`greenshift.config.OPTIMIZERS_WITH_MOMENTUM`), so a momentum value of an Adam
configuration is inert by construction rather than silently misapplied. DeepShift-PS ``sign`` and
``shift`` parameters are never weight-decayed (:func:`parameter_groups`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from greenshift.config import DSNNConfig
from greenshift.errors import ConfigError
from greenshift.shift import ShiftLayer

RANGER_K = 6
RANGER_ALPHA = 0.5


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al., 2019) around any inner optimiser.

    The inner ("fast") optimiser takes every step; every ``k`` steps the slow weights move a fraction
    ``alpha`` towards the fast ones and the fast weights are reset to them. The parameter groups are
    shared with the inner optimiser (the same dict objects), so an LR scheduler attached to this
    object changes the learning rate the inner optimiser uses.
    """

    def __init__(self, base: torch.optim.Optimizer, k: int = RANGER_K, alpha: float = RANGER_ALPHA) -> None:
        if k < 1:
            raise ConfigError(f"Lookahead k={k} must be at least 1")
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"Lookahead alpha={alpha} must be in (0, 1]")
        # Optimizer.__init__ sets up hooks and registers the inner optimiser's group dicts in place.
        super().__init__(base.param_groups, base.defaults)
        self.param_groups = base.param_groups
        self.base = base
        self.k = k
        self.alpha = alpha
        self.steps = 0
        # Slow weights start at the initial weights, as in the paper.
        self.slow = [p.detach().clone() for p in self._params()]

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One inner step; every ``k``-th step also synchronises slow and fast weights."""
        loss = self.base.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            for slow, fast in zip(self.slow, self._params(), strict=True):
                slow.add_(fast.detach() - slow, alpha=self.alpha)
                fast.copy_(slow)
        return loss

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """Inner optimiser state plus the step counter and slow weights (in parameter order)."""
        return {
            "base": self.base.state_dict(),
            "k": self.k,
            "alpha": self.alpha,
            "steps": self.steps,
            "slow": [s.clone() for s in self.slow],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore what :meth:`state_dict` produced; a state of another shape is a ConfigError."""
        keys = {"base", "k", "alpha", "steps", "slow"}
        if not isinstance(state_dict, dict) or set(state_dict) != keys:
            raise ConfigError("optimiser state is not a Lookahead state")
        params = self._params()
        if len(state_dict["slow"]) != len(params):
            raise ConfigError("Lookahead state holds a different number of parameters")
        self.base.load_state_dict(state_dict["base"])
        # The inner load replaces its group dicts; keep sharing them so schedulers keep working.
        self.param_groups = self.base.param_groups
        self.k = int(state_dict["k"])
        self.alpha = float(state_dict["alpha"])
        self.steps = int(state_dict["steps"])
        self.slow = [
            s.detach().to(p.device, p.dtype).clone() for s, p in zip(state_dict["slow"], params, strict=True)
        ]

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, base={self.base!r})"


def parameter_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """``model``'s parameters as optimiser groups: DeepShift-PS ``sign``/``shift`` without weight decay.

    Weight decay pulls a parameter towards 0, which for a shift means towards the largest weight
    magnitude ``2**0`` and for a sign towards a zero weight: neither is a regulariser. DeepShift's own
    training scripts exclude both from weight decay in the same way. Empty groups are left out.
    """
    shift_params: list[torch.Tensor] = []
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, ShiftLayer) and module.shift_type == "PS":
            for param in (module.sign, module.shift):
                if id(param) not in seen:
                    seen.add(id(param))
                    shift_params.append(param)
    others = [p for p in model.parameters() if id(p) not in seen]
    groups: list[dict[str, Any]] = []
    if others:
        groups.append({"params": others})
    if shift_params:
        groups.append({"params": shift_params, "weight_decay": 0.0})
    return groups


def make_optimizer(
    config: DSNNConfig, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]]
) -> torch.optim.Optimizer:
    """Build ``config.optimizer`` over ``params`` with the configuration's lr, weight decay and momentum.

    ``params`` are tensors or parameter groups (:func:`parameter_groups`); a group's own settings win
    over the configuration's.

    SGD uses classical (not Nesterov) momentum; RMSprop's momentum is its heavy-ball term; ranger is
    :class:`Lookahead` (k=6, alpha=0.5) around ``torch.optim.RAdam``.
    """
    params = list(params)
    common = {"lr": config.lr, "weight_decay": config.weight_decay}
    name = config.optimizer
    if name == "sgd":
        return torch.optim.SGD(params, momentum=config.momentum, nesterov=False, **common)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, momentum=config.momentum, **common)
    if name == "adam":
        return torch.optim.Adam(params, **common)
    if name == "adadelta":
        return torch.optim.Adadelta(params, **common)
    if name == "adagrad":
        return torch.optim.Adagrad(params, **common)
    if name == "radam":
        return torch.optim.RAdam(params, **common)
    if name == "ranger":
        return Lookahead(torch.optim.RAdam(params, **common), k=RANGER_K, alpha=RANGER_ALPHA)
    # DSNNConfig validates the name; this guards against the two lists drifting apart.
    raise ConfigError(f"optimizer={name!r} has no implementation in greenshift.train")

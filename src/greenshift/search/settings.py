"""Settings of one search run: what ``greenshift search`` and :class:`~greenshift.search.facade.DSNNSearch` take."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from greenshift.errors import ConfigError
from greenshift.search.facades import SEARCH_OPTIMIZERS as OPTIMIZERS

DEFAULT_OBJECTIVES = ("loss", "energy_model_j")
KEEP_MODELS = ("pareto", "all", "none")


@dataclass(frozen=True)
class SearchSettings:
    """Settings of one search run (the CLI flags of ``greenshift search``)."""

    dataset: str
    backbone: str
    out: str
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    optimizer: str = "smac"
    trials: int = 30
    min_epochs: int = 1
    max_epochs: int = 9
    eta: int = 3
    walltime_s: float | None = None
    max_total_epochs: int | None = None
    seed: int = 0
    workers: int = 1
    scheduler: str | None = None
    threads_per_trial: int | None = None
    device: str = "auto"
    data_dir: str | None = None
    image_size: int | None = None
    split_seed: int = 0
    fixed: Mapping[str, Any] = field(default_factory=dict)
    ranges: Mapping[str, Any] = field(default_factory=dict)
    space_file: str | None = None
    objective_weights: tuple[float, ...] | None = None
    # Measured in bench/continue_promoted.py (docs/results.md): continuing never fell behind retraining
    # in hypervolume over consumed epochs and reached the same fronts sooner, so it is the default.
    continue_promoted: bool = True
    keep_models: str = "pareto"
    trial_timeout_s: float | None = None
    energy_table: str | None = None
    meter: str = "auto"
    #: Country whose grid carbon intensity converts measured energy to emissions (docs/energy.md).
    country_iso_code: str = "DEU"
    force_new: bool = False
    verbose: bool = False
    # Each trial runs in a trial process that a timeout can kill and whose crash the search survives
    # (.isolation); False runs trials in the search's own process (debugging, tests that count calls).
    isolate_trials: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if len(self.objectives) < 2 or len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(
                "--objectives needs at least two different objectives, e.g. loss,energy_model_j"
            )
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if not 1 <= self.min_epochs <= self.max_epochs:
            raise ConfigError(
                f"epochs must satisfy 1 <= --min-epochs <= --max-epochs, got {self.min_epochs} and {self.max_epochs}"
            )
        if self.eta < 2:
            raise ConfigError(f"--eta must be at least 2, got {self.eta}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.threads_per_trial is not None and self.threads_per_trial < 1:
            raise ConfigError(f"--threads-per-trial must be at least 1, got {self.threads_per_trial}")
        if self.workers > 1 and self.scheduler:
            raise ConfigError(
                "give either --workers (a local cluster) or --scheduler (an existing one), not both"
            )
        if self.keep_models not in KEEP_MODELS:
            raise ConfigError(f"--keep-models must be one of {', '.join(KEEP_MODELS)}")
        for name, value in (("--walltime", self.walltime_s), ("--trial-timeout", self.trial_timeout_s)):
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.max_total_epochs is not None and self.max_total_epochs < self.max_epochs:
            raise ConfigError(
                f"--max-total-epochs {self.max_total_epochs} is below --max-epochs {self.max_epochs}: "
                "not even the default configuration fits"
            )
        code = self.country_iso_code
        if not (isinstance(code, str) and len(code) == 3 and code.isalpha() and code.isupper()):
            raise ConfigError(
                f"--country must be a three-letter ISO 3166 code such as DEU or FRA, got {code!r}"
            )
        if self.objective_weights is not None:
            weights = self.objective_weights
            if len(weights) != len(self.objectives) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
                raise ConfigError(
                    f"--objective-weights needs {len(self.objectives)} non-negative numbers that do not all equal 0"
                )

    def identity(self, space_json: str, fixed_extra: Mapping[str, Any]) -> dict[str, Any]:
        """What must not change when a run is resumed (limits and execution settings may)."""
        return {
            "dataset": self.dataset,
            "image_size": self.image_size,
            "split_seed": self.split_seed,
            "backbone": self.backbone,
            "objectives": list(self.objectives),
            "optimizer": self.optimizer,
            "min_epochs": self.min_epochs,
            "max_epochs": self.max_epochs,
            "eta": self.eta,
            "seed": self.seed,
            "space": space_json,
            "fixed": dict(sorted(fixed_extra.items())),
            "objective_weights": None if self.objective_weights is None else list(self.objective_weights),
            "continue_promoted": self.continue_promoted,
            # Only a country other than the default enters, so that runs from before the setting resume.
            **({} if self.country_iso_code == "DEU" else {"country_iso_code": self.country_iso_code}),
        }

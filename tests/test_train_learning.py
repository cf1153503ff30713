"""DSNNs learn digits through the same ``train()`` the search uses (slow: about a minute in all).

Each configuration trains 15 epochs at the data set's default 8x8 and must reach 90 % validation
accuracy. Before the training fixes of docs/concepts.md ("Training DSNNs from scratch"), the default
DSNN stayed near chance (0.12) and 3-bit Q at depth 6 reached 0.27-0.89 depending on the seed.
"""

from __future__ import annotations

import pytest

from greenshift.config import DSNNConfig
from greenshift.data import load_dataset
from greenshift.train import train

CONFIGS = {
    "default DSNN (PS, 5 bits, all layers)": DSNNConfig(),
    "float": DSNNConfig(shift_depth=0),
    "Q 5 bits, all layers": DSNNConfig(shift_type="Q", weight_bits=5),
    "Q 3 bits, depth 6": DSNNConfig(shift_type="Q", weight_bits=3, shift_depth=6),
}


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_learns_digits_in_15_epochs(config: DSNNConfig, cache_dir) -> None:
    result = train(config, load_dataset("digits"), 15, seed=0)
    assert result.status == "ok"
    assert result.final_accuracy >= 0.90, result.val_accuracy

"""greenshift: find Deep Shift Neural Networks that are both accurate and cheap in energy."""

from greenshift.config import DSNNConfig
from greenshift.errors import GreenshiftError

__version__ = "0.1.0"

__all__ = ["DSNNConfig", "GreenshiftError", "__version__"]

"""Numbers as text, for terminals, tables, figures and pages: one place for every unit and prefix.

Objective names carry their units (docs/architecture.md): ``energy_model_j`` is in joules,
``latency_ms`` in milliseconds, ``size_bits`` in bits, ``loss`` has none. :func:`objective_label`
names an axis or column, :func:`objective_text` writes a value with its unit and an SI prefix,
:func:`number_text` writes a bare number and :func:`percent_text` a signed percent change.
"""

from __future__ import annotations

import math
from typing import Any

LOSS = "loss"
#: Shown where a value is unknown or not finite (terminal tables use ``"-"``).
MISSING = "—"

# Suffix of an objective name -> unit shown on axes and in tables.
UNITS = {
    "_j": "J",
    "_mj": "mJ",
    "_uj": "µJ",
    "_kwh": "kWh",
    "_w": "W",
    "_ms": "ms",
    "_s": "s",
    "_bits": "bits",
    "_bytes": "bytes",
    "_mb": "MB",
    "_kg": "kg",
}
SI_PREFIXES = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"))


def objective_label(name: str) -> str:
    """Axis label of an objective, with its unit (``energy_model_j`` -> ``energy model [J]``)."""
    if name == LOSS:
        return "loss (1 − validation accuracy)"
    for suffix, unit in sorted(UNITS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return f"{name[: -len(suffix)].replace('_', ' ')} [{unit}]"
    return name.replace("_", " ")


def si(value: float, unit: str) -> str:
    """``value`` with an SI prefix that keeps it at or above 1 (down to femto): ``si(2.5e-6, "J")`` is ``2.5 µJ``."""
    if value == 0:
        return f"0 {unit}"
    for scale, prefix in SI_PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.4g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _unknown(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def objective_text(name: str, value: Any, *, missing: str = MISSING) -> str:
    """An objective value with its unit: loss to 4 decimals, joules and grams with SI prefixes, bits as integers."""
    if _unknown(value):
        return missing
    value = float(value)
    if name == LOSS:
        return f"{value:.4f}"
    if name.endswith("_j"):
        return si(value, "J")
    if name.endswith("_kg"):
        return si(value * 1000.0, "g")
    if name.endswith("_ms"):
        return f"{value:.4g} ms"
    if name.endswith("_bits"):
        return f"{value:,.0f}"
    return f"{value:.4g}"


def number_text(value: Any, *, missing: str = MISSING) -> str:
    """A bare number: floats to 4 significant digits, anything else as ``str``."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else missing
    return str(value)


def percent_text(value: float | None, *, missing: str = MISSING) -> str:
    """A signed percent change, ``+12.3 %`` (negative = better, for minimised objectives)."""
    return missing if value is None else f"{value:+.1f} %"

"""Export of searched DSNNs to a compact, safe file, and evaluation of exported models.

- :mod:`greenshift.export.format`: the file format (packed integer shift weights in safetensors,
  JSON metadata, checksum), :func:`export_model` and :func:`load_exported`.
- :mod:`greenshift.export.trial`: :func:`export_trial`, from a search run's trial.
- :mod:`greenshift.export.evaluate`: :func:`evaluate_exported`, float or integer reference inference.
- :mod:`greenshift.export.onnx`: :func:`to_onnx` (an export file as ONNX with integer shift weights, plus
  its float twin) and :func:`evaluate_onnx` (accuracy and latency in onnxruntime); needs the ``deploy`` extra.

The integer reference itself lives in :mod:`greenshift.shift.integer` (pure shift maths); its model class
:class:`IntegerReferenceModel` is re-exported here.
"""

from __future__ import annotations

from greenshift.export.evaluate import evaluate_exported
from greenshift.export.format import export_model, load_exported
from greenshift.export.onnx import evaluate_onnx, export_trial_onnx, to_onnx
from greenshift.export.trial import export_trial
from greenshift.shift.integer import IntegerReferenceModel

# What users need (docs/api.md); everything else is imported from its module.
__all__ = [
    "IntegerReferenceModel",
    "evaluate_exported",
    "evaluate_onnx",
    "export_model",
    "export_trial",
    "export_trial_onnx",
    "load_exported",
    "to_onnx",
]

"""ONNX deployment of exported DSNNs: :func:`to_onnx` writes the model (and its float twin) for
onnxruntime; :func:`evaluate_onnx` scores and times an ONNX model in onnxruntime.

The ONNX graph itself (integer power-of-two weights, fixed-point activations in integer types, what is
exact) is described in :mod:`greenshift.deploy.onnx`. Each file carries in its ``metadata_props`` what
is needed to load its data set again (``dataset``, ``split_seed``, ``image_size``, ``mean``, ``std``)
and the greenshift metadata of the export it came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from greenshift.data import Dataset, load_dataset
from greenshift.deploy.onnx import (
    OnnxExport,
    float_twin,
    median,
    predict,
    require_onnx,
    session,
    timed_runs_ms,
    to_onnx_bytes,
)
from greenshift.errors import ExportError
from greenshift.export.format import ExportMeta, load_exported
from greenshift.fileio import atomic_write_bytes

FLOAT_SUFFIX = ".float.onnx"
_SPLITS = ("train", "val", "test")


def float_path_for(path: str | os.PathLike[str]) -> Path:
    """Where the float twin of ``model.onnx`` goes: ``model.float.onnx`` next to it."""
    path = Path(path)
    stem = path.name.removesuffix(".onnx")
    return path.with_name(stem + FLOAT_SUFFIX)


@dataclass(frozen=True)
class Agreement:
    """How the ONNX model's predictions compare with greenshift's simulated deployed model."""

    n: int
    agreement: float
    max_logit_diff: float
    accuracy_onnx: float
    accuracy_simulated: float
    split: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class OnnxInfo:
    """What :func:`to_onnx` wrote: the DSNN and its float twin, their sizes, per-layer formats, agreement."""

    path: Path
    float_path: Path | None
    size_bytes: int
    float_size_bytes: int | None
    layers: dict[str, dict[str, Any]]
    agreement: Agreement | None
    meta: ExportMeta
    weight_types: dict[str, int] = field(default_factory=dict)


def _dataset_for(meta: ExportMeta, data_dir: str | os.PathLike[str] | None) -> Dataset:
    data = load_dataset(
        meta.dataset, data_dir=data_dir, image_size=meta.image_size, split_seed=meta.split_seed
    )
    if (data.num_classes, data.in_channels) != (meta.num_classes, meta.in_channels):
        raise ExportError(
            f"data set {meta.dataset!r} has {data.num_classes} classes and {data.in_channels} channel(s); "
            f"the exported model expects {meta.num_classes} and {meta.in_channels}"
        )
    return data


def _metadata(meta: ExportMeta, data: Dataset, kind: str) -> dict[str, str]:
    return {
        "greenshift_kind": kind,
        "dataset": meta.dataset,
        "split_seed": str(meta.split_seed),
        "image_size": str(data.image_size),
        "num_classes": str(meta.num_classes),
        "mean": json.dumps(list(meta.mean)),
        "std": json.dumps(list(meta.std)),
        "greenshift_meta": json.dumps(meta.to_json(), sort_keys=True),
    }


def _simulated_logits(model: nn.Module, data: Dataset, split: str) -> np.ndarray:
    with torch.no_grad():
        parts = [model(images) for images, _ in data.batches(split, 500, shuffle=False, augment=False)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, data.num_classes), dtype=np.float32)


def agreement_with(model: nn.Module, exported: OnnxExport, data: Dataset, split: str = "test") -> Agreement:
    """Compare onnxruntime's logits of ``exported`` with ``model``'s (the simulation) on ``split``."""
    part = data.split(split)
    onnx_logits = predict(session(exported.model_bytes), part.images)
    simulated = _simulated_logits(model.eval(), data, split)
    labels = part.labels.numpy()
    n = len(labels)
    if n == 0:
        raise ExportError(f"split {split!r} of the data set is empty")
    return Agreement(
        n=n,
        agreement=float((onnx_logits.argmax(1) == simulated.argmax(1)).mean()),
        max_logit_diff=float(np.abs(onnx_logits - simulated).max()),
        accuracy_onnx=float((onnx_logits.argmax(1) == labels).mean()),
        accuracy_simulated=float((simulated.argmax(1) == labels).mean()),
        split=split,
    )


def to_onnx(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    float_out: str | os.PathLike[str] | None = None,
    write_float: bool = True,
    check_split: str | None = "test",
    data_dir: str | os.PathLike[str] | None = None,
) -> OnnxInfo:
    """Convert the greenshift export file ``source`` into the ONNX model ``out``.

    With ``write_float`` the float twin (:func:`greenshift.deploy.onnx.float_twin`) goes to ``float_out``
    (default ``<out stem>.float.onnx``). With ``check_split`` the ONNX model runs in onnxruntime on that
    split of the model's data set and its predictions are compared with the simulated deployed model
    (:class:`Agreement`). The model takes ``uint8`` images ``[N, C, H, W]`` and returns logits.
    """
    require_onnx()
    if check_split is not None and check_split not in _SPLITS:
        raise ExportError(f"split {check_split!r} is not one of {', '.join(_SPLITS)}")
    model, meta = load_exported(source)
    data = _dataset_for(meta, data_dir)
    shape = tuple(data.split("test").images.shape[1:]) or tuple(data.split("val").images.shape[1:])
    exported = to_onnx_bytes(
        model, shape, mean=meta.mean, std=meta.std, metadata=_metadata(meta, data, "dsnn")
    )
    path = Path(out)
    atomic_write_bytes(path, exported.model_bytes)
    float_file: Path | None = None
    float_size = None
    if write_float:
        float_file = Path(float_out) if float_out is not None else float_path_for(path)
        twin = to_onnx_bytes(
            float_twin(model), shape, mean=meta.mean, std=meta.std, metadata=_metadata(meta, data, "float")
        )
        atomic_write_bytes(float_file, twin.model_bytes)
        float_size = float_file.stat().st_size
    agreement = agreement_with(model, exported, data, check_split) if check_split else None
    return OnnxInfo(
        path=path,
        float_path=float_file,
        size_bytes=path.stat().st_size,
        float_size_bytes=float_size,
        layers=exported.layers,
        agreement=agreement,
        meta=meta,
        weight_types=exported.summary(),
    )


def _read_onnx_metadata(path: Path) -> dict[str, str]:
    onnx, _ = require_onnx()
    if not path.is_file():
        raise ExportError(f"ONNX model {path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, onnx its own errors
        raise ExportError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    return {entry.key: entry.value for entry in proto.metadata_props}


def _latency(sess: Any, images: np.ndarray, batch: int, repeats: int) -> dict[str, float]:
    reps = -(-batch // len(images))
    block = np.concatenate([images] * reps)[:batch] if reps > 1 else images[:batch]
    times = timed_runs_ms(sess, np.ascontiguousarray(block), warmup=3, repeats=repeats)
    return {"batch": batch, "median_ms": median(times), "min_ms": min(times), "repeats": repeats}


def _score(sess: Any, data: Dataset, split: str) -> tuple[float, int]:
    part = data.split(split)
    logits = predict(sess, part.images)
    n = len(part.labels)
    return (float((logits.argmax(1) == part.labels.numpy()).mean()) if n else float("nan")), n


def evaluate_onnx(
    path: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "test",
    float_path: str | os.PathLike[str] | None = None,
    batch_sizes: tuple[int, ...] = (1, 64),
    repeats: int = 30,
    threads: int | None = None,
) -> dict[str, Any]:
    """Accuracy and onnxruntime latency of the ONNX model at ``path``, next to its float twin.

    Latency is the median of ``repeats`` runs per batch size after 3 untimed warm-up runs. The float
    twin is ``float_path``, else ``<stem>.float.onnx`` next to ``path`` when it exists. The data set
    (default: the one named in the file's metadata) is loaded at the file's image size and split seed.
    Returns ``{"model": {...}, "float": {...} or None, "speedup": {batch: float/model}, ...}``.
    """
    if split not in _SPLITS:
        raise ExportError(f"split {split!r} is not one of {', '.join(_SPLITS)}")
    path = Path(path)
    info = _read_onnx_metadata(path)
    name = dataset or info.get("dataset")
    if not name:
        raise ExportError(f"{path} does not name its data set; pass the data set")
    image_size = int(info["image_size"]) if info.get("image_size") else None
    data = load_dataset(
        name, data_dir=data_dir, image_size=image_size, split_seed=int(info.get("split_seed", 0))
    )
    twin = Path(float_path) if float_path is not None else float_path_for(path)
    if float_path is not None and not twin.is_file():
        raise ExportError(f"float model {twin} does not exist")
    images = data.split(split).images.numpy()
    if len(images) == 0:
        raise ExportError(f"split {split!r} of {name} is empty")
    result: dict[str, Any] = {"dataset": name, "split": split, "n": len(images)}
    speedup: dict[str, float] = {}
    for key, file in (("model", path), ("float", twin if twin.is_file() else None)):
        if file is None:
            result[key] = None
            continue
        sess = session(file.read_bytes(), threads=threads)
        accuracy, _ = _score(sess, data, split)
        latency = {str(b): _latency(sess, images, b, repeats) for b in batch_sizes}
        result[key] = {
            "path": str(file),
            "accuracy": accuracy,
            "size_bytes": file.stat().st_size,
            "latency": latency,
        }
    if result["float"] is not None:
        for b in batch_sizes:
            speedup[str(b)] = (
                result["float"]["latency"][str(b)]["median_ms"]
                / result["model"]["latency"][str(b)]["median_ms"]
            )
    result["speedup"] = speedup
    return result


def export_trial_onnx(
    run_dir: str | os.PathLike[str],
    trial_id: int,
    out: str | os.PathLike[str],
    *,
    retrain_if_missing: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    check_split: str | None = "test",
) -> tuple[OnnxInfo, Any]:
    """:func:`greenshift.export.export_trial` then :func:`to_onnx`: trial ``trial_id`` as ``out`` (ONNX).

    Returns the ONNX result and the :class:`~greenshift.export.format.ExportInfo` of the intermediate
    greenshift export (written to a temporary file and removed).
    """
    import tempfile

    from greenshift.export.trial import export_trial

    with tempfile.TemporaryDirectory(prefix="greenshift-onnx-") as folder:
        info = export_trial(
            run_dir,
            trial_id,
            Path(folder) / "model.gsx",
            retrain_if_missing=retrain_if_missing,
            data_dir=data_dir,
            device=device,
        )
        return to_onnx(info.path, out, check_split=check_split, data_dir=data_dir), info

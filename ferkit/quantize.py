"""int8 versions of an exported model: ONNX Runtime static QDQ quantization, per-channel weights.

Activations are calibrated on faces of the *Training* split (no evaluation split is looked at to build the
graph). ``reduce_range`` keeps the weights to 7 bits: CPUs without VNNI (AVX2, AVX-512 before VNNI) compute
u8 x s8 products in 16-bit intermediates that can saturate with full-range weights, losing accuracy that a
VNNI CPU never shows; 7-bit weights cannot saturate. Needs onnx (ferkit[train]); the int8 graph itself runs
on plain onnxruntime like any bundled model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from .data import load_split
from .export import with_meta
from .infer import open_session
from .preprocess import to_model_input

CALIBRATION_FACES = 512  # Training faces the activation ranges are fitted on
CALIBRATION_SEED = 0
MAX_LOSS_POINTS = 0.3  # issue 12's bar for shipping an int8 graph: PublicTest points lost against fp32
QUANTIZATION = "static QDQ, per-channel int8 weights, uint8 activations"


class FaceReader(CalibrationDataReader):
    """Calibration batches of faces, as the model's input."""

    def __init__(self, faces: np.ndarray, meta: dict, input_name: str, batch: int = 64):
        self.batches = iter([{input_name: to_model_input(faces[i:i + batch], meta)}
                             for i in range(0, len(faces), batch)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def calibration_faces(n: int = CALIBRATION_FACES, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """``n`` faces of FER2013's Training split, drawn without replacement."""
    train = load_split("Training")
    return train.images[np.random.default_rng(seed).choice(len(train), n, replace=False)]


def quantize(model: Path, meta: dict, faces: np.ndarray, out: Path, reduce_range: bool = False) -> Path:
    """The int8 graph of ``model`` at ``out`` (its metadata property copied from ``model``)."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared))
        name = open_session(model, 1).get_inputs()[0].name
        quantize_static(str(prepared), str(out), FaceReader(faces, meta, name), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8)
    return out


def int8_bytes(int8_path: Path, meta: dict) -> bytes:
    """The quantized graph's bytes carrying ``meta`` (re-calibrated for int8) like any exported model."""
    return with_meta(onnx.load(str(int8_path)), meta)

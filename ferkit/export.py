"""Export a trained checkpoint to ONNX for CPU inference, checked against PyTorch.

    ferkit export runs/vgg/best.pt --out vgg.onnx                       # verified on all of PublicTest
    ferkit export runs/vgg/best.pt --out vgg.onnx --temperature 1.31    # override the calibration
    ferkit export runs/mine/best.pt --out mine.onnx                     # a fine-tuned model, FER2013 or not here
    ferkit export runs/a runs/b runs/c --out best.onnx --flip           # one graph of an ensemble (ferkit.merge)

The ONNX graph takes ``input`` float32 (N, 1, S, S) with a dynamic N and returns ``logits``
(N, C) (an ensemble's are the log of its members' mean calibrated probability); the model metadata
(docs/design.md) is stored in the ONNX property ``ferkit``, and a ``<file>.sha256`` sidecar is
written beside the model. The graph is checked against PyTorch before anything is written, so a
failed export leaves no file. Needs torch and onnx (ferkit[train]).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .calibration import softmax
from .errors import ModelError, require_training_extra

try:  # the training extra; without it `ferkit export --help` still works and running says what to install
    import onnx
    import torch

    from .checkpoint import load_checkpoint
    from .ensemble import member_checkpoint
    from .merge import ensemble_model
    MISSING = None
except ImportError as e:
    MISSING = e
from .fileio import sha256_of, write_bytes, write_text
from .infer import META_PROPERTY, open_session
from .labels import SPLITS
from .meta import ENSEMBLE_ARCH, check_meta, default_meta  # noqa: F401
from .preprocess import to_model_input
from .weights import bundled_checkpoints, sidecar_path

MAX_PROB_DIFF = 1e-4   # max |softmax(PyTorch) - softmax(ONNX Runtime)| an export may show
RANDOM_FACES = 256     # faces to verify on when the FER2013 split is not on this machine
OPSET = 17


def onnx_bytes(model: torch.nn.Module, meta: dict, opset: int = OPSET) -> bytes:
    """The checked ONNX graph of ``model`` (eval mode) with ``meta`` stored in its ``ferkit`` property."""
    s = meta["input_size"]
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose: fixed graph
        torch.onnx.export(
            model.eval(), (torch.zeros(2, 1, s, s),), buffer, dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return with_meta(onnx.load_from_string(buffer.getvalue()), meta)


def with_meta(proto: "onnx.ModelProto", meta: dict) -> bytes:
    """The checked graph's bytes with ``meta`` as its ``ferkit`` property (and a one-line description)."""
    onnx.helper.set_model_props(proto, {META_PROPERTY: json.dumps(meta, sort_keys=True)})
    proto.doc_string = f"ferkit {meta['name']} ({meta['arch']}): {len(meta['classes'])} classes"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def model_and_meta(checkpoint_path_or_model: str | os.PathLike | torch.nn.Module,
                   meta: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """(model, validated meta): a bare model needs ``meta``; with a checkpoint, ``meta``'s keys override its own."""
    if isinstance(checkpoint_path_or_model, torch.nn.Module):
        if meta is None:
            raise ValueError("export_onnx needs meta with a bare model (see default_meta)")
        return checkpoint_path_or_model.eval(), check_meta(meta, "export metadata")
    model, ckpt_meta = load_checkpoint(checkpoint_path_or_model)
    return model, check_meta({**ckpt_meta, **(meta or {})}, str(checkpoint_path_or_model))


def write_model(out_path: str | os.PathLike, data: bytes) -> Path:
    """The ONNX file (atomically) and its ``.sha256`` sidecar."""
    out_path = Path(out_path)
    write_bytes(out_path, data)
    write_text(sidecar_path(out_path), f"{sha256_of(out_path)}  {out_path.name}\n")
    return out_path


def export_onnx(checkpoint_path_or_model: str | os.PathLike | torch.nn.Module, out_path: str | os.PathLike,
                meta: dict | None = None, *, opset: int = OPSET) -> Path:
    """Write the ONNX model (atomically) and its ``.sha256`` sidecar; returns the model's path.

    ``meta``: required with a bare model; with a checkpoint, its keys override the checkpoint's.
    """
    model, meta = model_and_meta(checkpoint_path_or_model, meta)
    return write_model(out_path, onnx_bytes(model, meta, opset))


def verify_onnx(model: torch.nn.Module, onnx_model: str | os.PathLike | bytes, faces: np.ndarray, meta: dict,
                batch_size: int = 512) -> float:
    """Max |Δ| between PyTorch's and ONNX Runtime's calibrated probabilities on ``faces`` (N, 48, 48) uint8.

    ``onnx_model``: a file, or the bytes of a model not written yet.
    """
    session = (ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"]) if isinstance(onnx_model, bytes)
               else open_session(Path(onnx_model)))
    name = session.get_inputs()[0].name
    temperature = float(meta["temperature"])
    worst = 0.0
    model.eval()
    for start in range(0, len(faces), batch_size):
        x = to_model_input(faces[start:start + batch_size], meta)
        with torch.no_grad():
            expected = softmax(model(torch.from_numpy(x)).numpy() / temperature)
        actual = softmax(session.run(None, {name: x})[0] / temperature)
        worst = max(worst, float(np.abs(expected - actual).max()))
    return worst


def verification_faces(split: str, data: str | None, size: int) -> tuple[np.ndarray, str]:
    """Faces to compare PyTorch and ONNX Runtime on, and what they are. Any faces test the arithmetic, so
    without the FER2013 data (a fine-tuned model on a laptop) seeded random faces stand in, said so."""
    from .data import load_split
    from .errors import DataError

    try:
        return load_split(split, data).images, f"{split} ({{n}} faces)"
    except DataError as e:
        faces = np.random.default_rng(0).integers(0, 256, (RANDOM_FACES, size, size), dtype=np.uint8)
        return faces, f"{RANDOM_FACES} random faces (FER2013 {split} is not here: {str(e).split(':')[0]})"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("ferkit export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                   help="a .pt checkpoint written by ferkit train, its run folder, or a bundled model's name "
                        f"({', '.join(bundled_checkpoints())}; a bundled ensemble's is its first member); several: "
                        "one graph of their ensemble, the weighted mean of their calibrated probabilities. Read with "
                        "weights_only=True, so a crafted file cannot run code")
    p.add_argument("--out", required=True,
                   help="ONNX file to write, a .sha256 sidecar beside it (required; no default)")
    p.add_argument("--verify-split", default="PublicTest", choices=[*SPLITS, "none"],
                   help="FER2013 split on which ONNX Runtime must match PyTorch within "
                        f"{MAX_PROB_DIFF:g} in every probability, before the file is written; without the "
                        f"data, {RANDOM_FACES} random faces (default: PublicTest; none: skip)")
    p.add_argument("--data", default=None, help="FER2013 folder (default: $FERKIT_DATA or ../shared/data/fer2013)")
    p.add_argument("--temperature", type=float, default=None,
                   help="calibration temperature to store (default: the checkpoint's; an ensemble's: 1, its "
                        "members keep their own)")
    p.add_argument("--name", default=None,
                   help=f"model name to store (default: the checkpoint's; an ensemble's: {ENSEMBLE_ARCH})")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default: {OPSET})")
    p.add_argument("--weights", type=float, nargs="+", default=None, metavar="W",
                   help="one weight per checkpoint of an ensemble, normalised to sum 1 (default: equal weights)")
    p.add_argument("--flip", action="store_true",
                   help="average each face with its mirror inside the graph, twice the cost per face "
                        "(default: off; recorded as graph_tta in the metadata)")
    return p


def cli_model(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """The model the command line names: one checkpoint, or the ensemble of several (or with --flip / --weights)."""
    overrides = {k: v for k, v in (("temperature", args.temperature), ("name", args.name)) if v is not None}
    if len(args.checkpoints) == 1 and not args.flip and args.weights is None:
        return model_and_meta(member_checkpoint(args.checkpoints[0]), overrides)
    model, meta = ensemble_model(args.checkpoints, args.weights, flip=args.flip, name=args.name or ENSEMBLE_ARCH)
    return model, check_meta({**meta, **overrides}, f"ensemble {meta['name']!r}")


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    require_training_extra("export", MISSING)
    if args.temperature is not None and not args.temperature > 0:
        parser.error(f"--temperature must be > 0, got {args.temperature}")
    if args.weights is not None and len(args.weights) != len(args.checkpoints):
        parser.error(f"--weights: {len(args.weights)} weights for {len(args.checkpoints)} checkpoints")
    model, meta = cli_model(args)
    what_model = " + ".join(args.checkpoints)
    data = onnx_bytes(model, meta, args.opset)
    verified = ""
    if args.verify_split != "none":  # checked before anything is written: a failed export leaves no file
        faces, what = verification_faces(args.verify_split, args.data, meta["input_size"])
        diff = verify_onnx(model, data, faces, meta)
        if diff > MAX_PROB_DIFF:
            raise ModelError(f"the ONNX graph of {what_model} disagrees with PyTorch on "
                             f"{what.format(n=len(faces))}: max |Δprob| = {diff:.2e} > {MAX_PROB_DIFF:g}; "
                             "nothing was written")
        verified = f"verified on {what.format(n=len(faces))}: max |Δprob| = {diff:.2e} <= {MAX_PROB_DIFF:g}"
    out = write_model(args.out, data)
    arch = meta["arch"] + (f" of {len(meta['members'])}, in-graph TTA {meta['graph_tta']}" if meta["members"] else "")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {arch}, classes: {', '.join(meta['classes'])}, "
          f"T={meta['temperature']:.3f}) and {sidecar_path(out).name}")
    if verified:
        print(verified)
    print(f"use it: ferkit predict --model {out} photo.jpg   (or: ferkit app --model {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

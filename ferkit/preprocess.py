"""The original report's OpenCV preprocessing, and the one function that turns faces into model input.

The report's steps, with its parameters (the defaults of ``ReportParams``):

    resized   = cv2.resize(image, (48, 48))
    blurred   = cv2.GaussianBlur(resized, (5, 5), 0)
    sharpened = cv2.addWeighted(resized, 1.5, blurred, -0.6, 0)
    denoised  = cv2.fastNlMeansDenoisingColored(sharpened, None, 15, 15, 5, 20)   # colour input
              = cv2.fastNlMeansDenoising(sharpened, None, 15, 5, 20)              # grayscale input
    edges     = cv2.Canny(gray, 30, 30) of the resized image and of the denoised one

``ferkit preprocess IMAGE --out fig.png`` draws them side by side. ``to_model_input`` is shared by
inference and training (see docs/design.md); it needs only numpy and OpenCV.

    ferkit preprocess photo.jpg --out steps.png --nlm-h 10 --canny 50 150
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import FerkitError, ImageError, ModelError
from .fileio import atomic_path
from .images import as_uint8_image, read_image_file, to_gray
from .meta import PREPROCESS_MODES

STAGES = ("original", "resized", "blurred", "sharpened", "denoised", "edges_original", "edges_processed")


@dataclass(frozen=True)
class ReportParams:
    """The report's preprocessing parameters; the defaults are the report's own values."""

    size: int = 48                  # resize target (square)
    blur_ksize: int = 5             # Gaussian kernel side, odd; sigma derived from it (sigmaX=0)
    sharpen_alpha: float = 1.5      # weight of the resized image in addWeighted
    sharpen_beta: float = -0.6      # weight of the blurred image (negative = unsharp mask)
    nlm_h: float = 15.0             # NL-means filter strength (luminance)
    nlm_h_color: float = 15.0       # NL-means filter strength (colour components)
    nlm_template: int = 5           # templateWindowSize
    nlm_search: int = 20            # searchWindowSize
    canny_low: float = 30.0         # Canny hysteresis thresholds
    canny_high: float = 30.0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if self.blur_ksize < 1 or self.blur_ksize % 2 == 0:
            raise ValueError(f"blur kernel size must be a positive odd number, got {self.blur_ksize}")
        if self.nlm_h < 0 or self.nlm_h_color < 0:
            raise ValueError(f"NL-means strengths must be >= 0, got h={self.nlm_h}, hColor={self.nlm_h_color}")
        if self.nlm_template < 1 or self.nlm_search < 1:
            raise ValueError(f"NL-means window sizes must be >= 1, got {self.nlm_template} and {self.nlm_search}")
        if self.canny_low < 0 or self.canny_high < 0:
            raise ValueError(f"Canny thresholds must be >= 0, got {self.canny_low} and {self.canny_high}")


REPORT = ReportParams()


# --- the report's steps ---------------------------------------------------------------------


def resize(image: np.ndarray, size: int = REPORT.size) -> np.ndarray:
    """The report's resize (OpenCV's default bilinear interpolation)."""
    return cv2.resize(image, (size, size))


def gaussian_blur(image: np.ndarray, ksize: int = REPORT.blur_ksize) -> np.ndarray:
    return cv2.GaussianBlur(image, (ksize, ksize), 0)


def sharpen(image: np.ndarray, blurred: np.ndarray, alpha: float = REPORT.sharpen_alpha,
            beta: float = REPORT.sharpen_beta) -> np.ndarray:
    """Unsharp mask: ``alpha * image + beta * blurred``, saturated to uint8."""
    return cv2.addWeighted(image, alpha, blurred, beta, 0)


def denoise(image: np.ndarray, params: ReportParams = REPORT) -> np.ndarray:
    """Non-Local-Means denoising; the colour variant on BGR input, the grayscale one otherwise."""
    if image.ndim == 3:
        return cv2.fastNlMeansDenoisingColored(image, None, params.nlm_h, params.nlm_h_color,
                                               params.nlm_template, params.nlm_search)
    return cv2.fastNlMeansDenoising(image, None, params.nlm_h, params.nlm_template, params.nlm_search)


def canny_edges(image: np.ndarray, low: float = REPORT.canny_low, high: float = REPORT.canny_high) -> np.ndarray:
    """Canny edges (0 or 255) of the image's grayscale version."""
    return cv2.Canny(to_gray(image), low, high)


def report_pipeline(image: np.ndarray, params: ReportParams = REPORT) -> dict[str, np.ndarray]:
    """Every stage of the report's preprocessing, by name (``STAGES``), for a gray or BGR image of any size.

    ``edges_original`` is taken on the resized image, so both edge maps share one scale and differ
    only by the blur / sharpen / denoise steps.
    """
    original = as_uint8_image(image)
    resized = resize(original, params.size)
    blurred = gaussian_blur(resized, params.blur_ksize)
    sharpened = sharpen(resized, blurred, params.sharpen_alpha, params.sharpen_beta)
    denoised = denoise(sharpened, params)
    return {
        "original": original,
        "resized": resized,
        "blurred": blurred,
        "sharpened": sharpened,
        "denoised": denoised,
        "edges_original": canny_edges(resized, params.canny_low, params.canny_high),
        "edges_processed": canny_edges(denoised, params.canny_low, params.canny_high),
    }


def apply_report_preprocessing(face: np.ndarray, params: ReportParams = REPORT) -> np.ndarray:
    """Blur -> sharpen -> denoise of one grayscale uint8 face, kept at its size (no resize)."""
    sharpened = sharpen(face, gaussian_blur(face, params.blur_ksize), params.sharpen_alpha, params.sharpen_beta)
    return denoise(sharpened, params)


# --- faces -> model input -----------------------------------------------------------------


def face_stack(faces: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """(N, size, size) uint8 from a stack or a list of 2-D uint8 faces, resized with INTER_AREA where needed."""
    is_stack = isinstance(faces, np.ndarray) and faces.dtype == np.uint8 and faces.ndim == 3
    if is_stack and faces.shape[1:] == (size, size):
        return faces
    out = np.empty((len(faces), size, size), np.uint8)
    for i, face in enumerate(faces):
        face = np.asarray(face)
        if face.ndim != 2 or face.dtype != np.uint8 or face.size == 0:
            raise ImageError(f"face {i}: expected a non-empty 2-D uint8 grayscale array, got {face.dtype} {face.shape}")
        out[i] = face if face.shape == (size, size) else cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
    return out


def to_model_input(faces: np.ndarray | Sequence[np.ndarray], meta: dict) -> np.ndarray:
    """Grayscale uint8 faces (N, H, W) or a list of 2-D faces -> float32 (N, 1, S, S), S = ``meta["input_size"]``.

    Resized to S with INTER_AREA when needed, then the report's blur/sharpen/denoise when
    ``meta["preprocess"] == "report"``, then ``(x / 255 - mean) / std``.
    """
    mode = meta.get("preprocess", "none")
    if mode not in PREPROCESS_MODES:
        raise ModelError(f"model metadata has preprocess={mode!r}; expected one of {', '.join(PREPROCESS_MODES)}")
    try:
        size, mean, std = int(meta["input_size"]), float(meta["mean"]), float(meta["std"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"model metadata lacks a usable input_size/mean/std ({e!r})") from e
    stack = face_stack(faces, size)
    if mode == "report":
        stack = np.stack([apply_report_preprocessing(f) for f in stack]) if len(stack) else stack
    x = stack.astype(np.float32) * np.float32(1.0 / 255.0)
    return ((x - np.float32(mean)) / np.float32(std))[:, None]


# --- the figure ------------------------------------------------------------------------------


def _shown(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two edge maps with a mid-gray 2-px gutter between them."""
    gutter = np.full((left.shape[0], 2), 128, np.uint8)
    return np.hstack([left, gutter, right])


def pipeline_figure(stages: dict[str, np.ndarray], path: str | os.PathLike, params: ReportParams = REPORT) -> Path:
    """Write original | blurred | sharpened | denoised | Canny (original vs processed) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = params
    h, w = stages["original"].shape[:2]
    panels = [
        (stages["original"], f"original {w}×{h}\n(then resized to {p.size}×{p.size})"),
        (stages["blurred"], f"Gaussian blur\n{p.blur_ksize}×{p.blur_ksize}, σ from kernel"),
        (stages["sharpened"], f"sharpened\n{p.sharpen_alpha:g}·resized {p.sharpen_beta:+g}·blurred"),
        (stages["denoised"],
         f"NL-means denoised\nh={p.nlm_h:g} hColor={p.nlm_h_color:g} tw={p.nlm_template} sw={p.nlm_search}"),
        (_side_by_side(stages["edges_original"], stages["edges_processed"]),
         f"Canny({p.canny_low:g}, {p.canny_high:g})\nresized | processed"),
    ]
    widths = [1, 1, 1, 1, 2]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3.6), gridspec_kw={"width_ratios": widths})
    for ax, (image, title) in zip(axes, panels):
        small = image.shape[0] <= 2 * p.size
        ax.imshow(_shown(image), cmap="gray", vmin=0, vmax=255, interpolation="nearest" if small else "antialiased")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", pad_inches=0.05, format=path.suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    return path


# --- command line ---------------------------------------------------------------------------


def _figure_formats() -> set[str]:
    from matplotlib.backend_bases import FigureCanvasBase

    return set(FigureCanvasBase.get_supported_filetypes())


def get_args_parser() -> argparse.ArgumentParser:
    d = REPORT
    p = argparse.ArgumentParser(prog="ferkit preprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="any image file (8/16-bit, gray, colour, with or without alpha)")
    p.add_argument("--out", default=None, help="figure to write (default: <image name>_preprocess.png here)")
    p.add_argument("--size", type=int, default=d.size, help=f"resize target side (default {d.size})")
    p.add_argument("--blur", type=int, default=d.blur_ksize, help=f"Gaussian kernel side, odd (default {d.blur_ksize})")
    p.add_argument("--sharpen-alpha", type=float, default=d.sharpen_alpha, help=f"default {d.sharpen_alpha}")
    p.add_argument("--sharpen-beta", type=float, default=d.sharpen_beta, help=f"default {d.sharpen_beta}")
    p.add_argument("--nlm-h", type=float, default=d.nlm_h, help=f"NL-means h (default {d.nlm_h:g})")
    p.add_argument("--nlm-h-color", type=float, default=d.nlm_h_color,
                   help=f"NL-means hColor, colour images only (default {d.nlm_h_color:g})")
    p.add_argument("--nlm-template", type=int, default=d.nlm_template,
                   help=f"templateWindowSize (default {d.nlm_template})")
    p.add_argument("--nlm-search", type=int, default=d.nlm_search, help=f"searchWindowSize (default {d.nlm_search})")
    p.add_argument("--canny", type=float, nargs=2, default=(d.canny_low, d.canny_high), metavar=("LOW", "HIGH"),
                   help=f"Canny thresholds (default {d.canny_low:g} {d.canny_high:g})")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        params = ReportParams(args.size, args.blur, args.sharpen_alpha, args.sharpen_beta, args.nlm_h,
                              args.nlm_h_color, args.nlm_template, args.nlm_search, *args.canny)
    except ValueError as e:
        parser.error(str(e))
    out = Path(args.out or f"{Path(args.image).stem}_preprocess.png")
    if out.suffix.lower().lstrip(".") not in _figure_formats():
        parser.error(f"--out {out}: choose a figure suffix among {', '.join(sorted(_figure_formats()))}")
    stages = report_pipeline(read_image_file(args.image), params)
    try:
        pipeline_figure(stages, out, params)
    except OSError as e:
        raise FerkitError(f"cannot write {out}: {e.strerror or e}") from e
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

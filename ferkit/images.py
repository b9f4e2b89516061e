"""Images in: any source (a path, encoded bytes, a PIL image, a numpy array) as a uint8 BGR or gray array.

    image = read_image("photo.jpg")                 # (H, W, 3) BGR uint8, EXIF orientation applied
    image = read_image(rgb_array, color="rgb")      # numpy input is BGR unless told otherwise

Files and bytes are decoded by Pillow (one decoder for every door: API, CLI, app); arrays are
checked, never clipped silently: pixels outside the range their type allows are an ImageError.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

# What the CLI, the app and image folders accept, all read by Pillow (AVIF since Pillow 11.3).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif")
MAX_PIXELS = 50_000_000    # larger images are refused before they are decoded (a 50 MP RGB image is 150 MB)
MIN_SIDE = 16              # px; smaller images cannot hold a recognisable face
EXIF_ORIENTATION = 0x0112  # the EXIF tag that says how the camera was held
COLOR_ORDERS = ("bgr", "rgb")
UINT8_RANGE = (0, 255)
SIXTEEN_BIT_SCALE = 1.0 / 257.0  # 65535 -> 255
TRUNCATED = "the file is truncated or corrupt"


class _Undecodable(ImageError):
    """The bytes are not an image ferkit can decode (empty, truncated, another format)."""


def source_name(source: Any, name: str | None = None) -> str:
    """What error messages and results call an image source: ``name``, the path, or its kind."""
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"array {source.shape}"
    if isinstance(source, Image.Image):
        return "PIL image"
    return "image bytes"


def read_image(source: Any, *, color: str = "bgr", name: str | None = None,
               max_side: int | None = None) -> np.ndarray:
    """Any image source as a BGR uint8 (H, W, 3) array; ImageError naming the source when unusable.

    ``source``: a path, encoded bytes, a PIL image or a numpy array (BGR, or RGB with
    ``color="rgb"``, or gray (H, W); BGRA drops its alpha; 16-bit is scaled to 8-bit). Files and
    bytes honour their EXIF orientation; images over 50 MP are refused from their header, before
    decoding. ``name`` is used in error messages (e.g. an upload's file name). ``max_side``: an
    array that needs converting (not uint8) and is larger is shrunk to this long side first, so
    the conversion runs once, on the small copy.
    """
    image = decode_image(source, color=color, name=name, max_side=max_side)
    h, w = (source if isinstance(source, np.ndarray) else image).shape[:2]  # a shrunk array keeps its own size
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{source_name(source, name)} is {w}x{h} px: too small to hold a face "
                         f"(at least {MIN_SIDE} px a side)")
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def decode_image(source: Any, *, color: str = "bgr", name: str | None = None,
                 max_side: int | None = None) -> np.ndarray:
    """Like ``read_image``, but gray stays (H, W) and there is no size floor (for figures of any image)."""
    if color not in COLOR_ORDERS:
        raise ValueError(f"unknown color order {color!r}; choose one of {', '.join(COLOR_ORDERS)}")
    where = source_name(source, name)
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_pixels(source.shape[1::-1], where)
        image = as_uint8_image(source, where, max_side)
        return np.ascontiguousarray(image[:, :, ::-1]) if image.ndim == 3 and color == "rgb" else image
    if isinstance(source, Image.Image):
        _check_pixels(source.size, where)
        return _pil_to_array(source, where)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise _Undecodable(f"{where}: empty (0 bytes)")
        return _decode(io.BytesIO(bytes(source)), where)
    if isinstance(source, (str, os.PathLike)):
        path = existing_file(source)
        if path.stat().st_size == 0:
            raise _Undecodable(f"{where}: empty file (0 bytes)")
        return _decode(path, where)
    raise ImageError(f"cannot read an image from a {type(source).__name__}: pass a path, bytes, "
                     "a PIL image or a numpy array")


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 gray (H, W) or BGR (H, W, 3), for ``ferkit preprocess``; one message for any bad file."""
    path = existing_file(path)
    try:
        return decode_image(path)
    except _Undecodable as e:
        raise ImageError(f"cannot decode {path}: the file is empty, corrupt or not an image") from e


def header_pixels(path: str | os.PathLike) -> int:
    """Width x height from the file's header, without decoding it; 0 when the header cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return 0  # an unreadable file: read_image says why when it decodes it
    return width * height


def existing_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or ImageError when it is missing or not a file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}" if not path.exists() else f"not a file: {path}")
    return path


def _check_pixels(size: tuple[int, int], where: str) -> None:
    w, h = size
    if w * h > MAX_PIXELS:
        raise ImageError(f"{where} is {w}x{h} px ({w * h / 1e6:.0f} MP): more than the {MAX_PIXELS // 1_000_000} MP "
                         "ferkit reads; downscale it first")


def _decode(fp: Path | io.BytesIO, where: str) -> np.ndarray:
    """Open lazily, check the header's size, then decode with the EXIF orientation applied."""
    formats = ", ".join(s.lstrip(".").upper() for s in IMAGE_SUFFIXES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower; checked below
        try:
            opened = Image.open(fp)
        except Image.DecompressionBombError as e:
            raise ImageError(f"{where} is more than the {MAX_PIXELS // 1_000_000} MP ferkit reads; "
                             "downscale it first") from e
        except UnidentifiedImageError as e:
            raise _Undecodable(f"{where} is not an image (or not in a format ferkit reads: {formats})") from e
        except OSError as e:  # an OS error has an errno; Pillow's own ("Truncated File Read") have none
            if e.errno is None:
                raise _Undecodable(f"cannot decode {where}: {TRUNCATED}") from e
            raise _Undecodable(f"cannot read {where}: {(e.strerror or str(e)).lower()}") from e
        with opened:
            _check_pixels(opened.size, where)
            try:
                # exif_transpose copies the image even when it is upright: call it only when it turns it
                upright = ImageOps.exif_transpose(opened) if opened.getexif().get(EXIF_ORIENTATION, 1) != 1 else opened
                upright.load()
                return _pil_to_array(upright, where)
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise _Undecodable(f"cannot decode {where}: {TRUNCATED}") from e  # Pillow's words stay in __cause__


def _pil_to_array(image: Image.Image, where: str) -> np.ndarray:
    """A PIL image of any mode as uint8 gray (H, W) or BGR (H, W, 3)."""
    mode = image.mode
    if mode.startswith("I;16"):
        return as_uint8_image(np.asarray(image).astype(np.uint16), where)
    if mode == "I":  # 32-bit integers; in practice 16-bit data
        data = np.asarray(image)
        data = np.clip(data, 0, 65535).astype(np.uint16) if data.max() > 255 else data.astype(np.uint8)
        return as_uint8_image(data, where)
    if mode == "F":
        return as_uint8_image(np.asarray(image), where)
    if mode in ("1", "LA", "La"):
        image = image.convert("L")
    elif (mode == "P" and "transparency" in image.info) or mode in ("PA", "RGBa"):
        image = image.convert("RGBA")
    elif mode not in ("L", "RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV, palette
        image = image.convert("RGB")
    data = np.asarray(image)
    if data.ndim == 3:  # RGB(A) -> BGR, alpha dropped
        data = cv2.cvtColor(data, cv2.COLOR_RGBA2BGR if data.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(data)


# --- arrays -------------------------------------------------------------------------------------


def as_uint8_image(image: np.ndarray, where: str = "image", max_side: int | None = None) -> np.ndarray:
    """Any 2-D or (H, W, 1|3|4) array as uint8 gray (H, W) or BGR (H, W, 3); ImageError when unusable.

    uint16 is scaled to 8-bit; floats are [0, 1] when their maximum is <= 1, else [0, 255]; other
    integers must lie in [0, 255]; values outside the range raise (never clipped); an alpha channel
    is dropped. ``max_side``: see ``read_image``.
    """
    image = _checked_layout(image, where)
    if image.dtype != np.uint8:
        image = _converted(image, where, max_side)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def _checked_layout(image: Any, where: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{where}: expected a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise ImageError(f"{where} is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"{where}: expected a gray (H, W) or colour (H, W, 3|4) image, got shape {image.shape}")
    return image


def _converted(image: np.ndarray, where: str, max_side: int | None) -> np.ndarray:
    """A non-uint8 array as uint8 in one pass (no full-size float copies), shrunk first when it is large."""
    if image.dtype == np.bool_:
        return image.view(np.uint8) * np.uint8(255)
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ImageError(f"{where}: unsupported pixel type {image.dtype}")
    if image.dtype == np.uint16:
        return cv2.convertScaleAbs(_shrunk(image, max_side), alpha=SIXTEEN_BIT_SCALE)
    lo, hi = image.min(), image.max()
    if np.issubdtype(image.dtype, np.integer):
        _check_range(lo, hi, UINT8_RANGE, image.dtype, where)
        return image.astype(np.uint8)  # exact: every value is already a uint8 value
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ImageError(f"{where} holds NaN or infinite values")
    top = 1.0 if hi <= 1.0 else 255.0
    _check_range(lo, hi, (0, top) if top == 1.0 else UINT8_RANGE, image.dtype, where)
    floats = image.astype(np.float32) if image.dtype == np.float16 else image  # OpenCV has no float16 arithmetic
    return cv2.convertScaleAbs(_shrunk(floats, max_side), alpha=255.0 / top)  # |x| is x: checked >= 0


def _check_range(lo: Any, hi: Any, allowed: tuple[float, float], dtype: np.dtype, where: str) -> None:
    if lo < allowed[0] or hi > allowed[1]:
        hint = "0-1 or 0-255" if np.issubdtype(dtype, np.floating) else "0-255 (use uint16 for 16-bit images)"
        raise ImageError(f"{where} holds {dtype} values from {lo} to {hi}: pixels of this type must be {hint}")


def _shrunk(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """The array with its long side at most ``max_side`` (INTER_AREA), contiguous for OpenCV."""
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    factor = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


def to_gray(image: np.ndarray) -> np.ndarray:
    """A uint8 BGR image as gray; a gray one as it is."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def as_gray(image: np.ndarray, where: str = "image") -> np.ndarray:
    """Any array ``as_uint8_image`` takes, as uint8 gray (H, W)."""
    return to_gray(as_uint8_image(image, where))

"""Rendered instances (PS3.18 10.4.1.1.3): a frame as an 8-bit PNG or JPEG for thumbnails and
quick looks, windowed as a viewer would show it first: the modality rescale, then the first
Window Center / Width of the data set, or the frame's min-max when it has none."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut

from scp_node.web.errors import HttpProblem

MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
DEFAULT_MEDIA_TYPE = "image/jpeg"  # PS3.18 8.3.5.1.2: the default rendered media type


def rendered_media_type(accept: str | None) -> str:
    """The first of image/jpeg and image/png the Accept header allows; 406 for neither."""
    if not accept:
        return DEFAULT_MEDIA_TYPE
    for entry in accept.split(","):
        name = entry.split(";", 1)[0].strip().lower()
        if name in MEDIA_TYPES:
            return name
        if name in ("*/*", "image/*"):
            return DEFAULT_MEDIA_TYPE
    raise HttpProblem(406, f"cannot render as {accept!r}: image/jpeg or image/png")


def viewport(text: str | None) -> tuple[int, int] | None:
    """`viewport=width,height`: the largest size to fit the image in (aspect kept)."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise HttpProblem(400, f"viewport={text!r}: expected width,height in pixels")
    return int(parts[0]), int(parts[1])


def render(ds: Dataset, frame: int, media_type: str, fit: tuple[int, int] | None = None) -> bytes:
    """Frame `frame` (from 1) of a native data set as image bytes of `media_type`."""
    if "PixelData" not in ds:
        raise HttpProblem(404, "the instance has no pixel data to render")
    count = int(ds.get("NumberOfFrames") or 1)
    if not 1 <= frame <= count:
        raise HttpProblem(404, f"frame {frame} does not exist (frames 1-{count})")
    pixels = ds.pixel_array
    if count > 1:
        pixels = pixels[frame - 1]
    if int(ds.get("SamplesPerPixel") or 1) == 1:
        image = Image.fromarray(_windowed(ds, pixels), mode="L")
    else:
        image = Image.fromarray(_to_8_bits(pixels, int(ds.BitsStored)), mode="RGB")
    if fit is not None:
        image.thumbnail(fit)
    buffer = io.BytesIO()
    image.save(buffer, format=MEDIA_TYPES[media_type])
    return buffer.getvalue()


def _windowed(ds: Dataset, pixels: np.ndarray) -> np.ndarray:
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    center, width = _window(ds)
    if width is None:
        low, high = float(values.min()), float(values.max())
    else:
        low, high = center - width / 2, center + width / 2
    scaled = np.clip((values - low) / max(high - low, 1e-9), 0.0, 1.0) * 255.0
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.round(scaled).astype(np.uint8)


def _window(ds: Dataset) -> tuple[float, float | None]:
    """The first Window Center / Width pair, or (0, None) when the data set has none usable."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None or center == "" or width == "":
        return 0.0, None
    center = center[0] if isinstance(center, MultiValue) else center
    width = width[0] if isinstance(width, MultiValue) else width
    return float(center), (float(width) if float(width) > 0 else None)


def _to_8_bits(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return (pixels.astype(np.float64) * 255.0 / (2**bits_stored - 1)).round().clip(0, 255).astype(np.uint8)

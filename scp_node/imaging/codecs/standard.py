"""Standard lossless image codecs: CharLS (pyjpegls), libjxl and OpenJPEG (imagecodecs), zlib.

JPEG-LS and JPEG XL are the node's storage codecs; JPEG 2000 and deflate are kept as
references so that benchmarks and `scp-node codec try` compare against what PACS use today.
"""

from __future__ import annotations

import zlib

import imagecodecs
import jpeg_ls
import numpy as np

from scp_node.imaging.codecs.base import FrameCodec, ImageDescription, squeeze_samples


class JpegLsCodec(FrameCodec):
    """Lossless JPEG-LS through pyjpegls (CharLS); imagecodecs' CharLS build fails on some
    8-bit frames with "destination buffer is too small"."""

    name = "jpegls"
    available = True
    library_errors = (RuntimeError, ValueError)  # what pyjpegls raises for CharLS's errors
    dicom_syntax = "1.2.840.10008.1.2.4.80"  # JPEG-LS Lossless

    def encode_frame(self, frame: np.ndarray, bit_depth: int) -> bytes:
        # pyjpegls takes the bit depth from the frame's maximum: a 16-bit frame whose values
        # fit in 8 bits must be handed over as 8-bit samples or CharLS codes the wrong bytes.
        if frame.dtype != np.uint8 and int(frame.max(initial=0)) < 256:
            frame = frame.astype(np.uint8)
        return bytes(jpeg_ls.encode_array(np.ascontiguousarray(squeeze_samples(frame))))

    def decode_frame(self, data: bytes, desc: ImageDescription) -> np.ndarray:
        return jpeg_ls.decode(np.frombuffer(data, np.uint8))

    def frame_precision(self, stream: bytes, desc: ImageDescription) -> int:
        """P of the frame header (SOF55, ITU-T T.87 C.2.2): a frame of small values is coded
        with 8-bit samples even in a 16-bit image (see encode_frame)."""
        start = stream.find(b"\xff\xf7")
        return stream[start + 4] if start >= 0 and start + 4 < len(stream) else 0


class JpegXlCodec(FrameCodec):
    """Lossless JPEG XL; option `effort` (1-9, default 7) trades encode time for size."""

    name = "jpegxl"
    available = bool(imagecodecs.JPEGXL.available)
    library_errors = (imagecodecs.JpegxlError,)
    dicom_syntax = "1.2.840.10008.1.2.4.110"  # JPEG XL Lossless

    def encode_frame(self, frame: np.ndarray, bit_depth: int) -> bytes:
        return bytes(
            imagecodecs.jpegxl_encode(
                np.ascontiguousarray(squeeze_samples(frame)),
                lossless=True,
                effort=int(self.options.get("effort", 7)),
                bitspersample=bit_depth,
                numthreads=1,
            )
        )

    def decode_frame(self, data: bytes, desc: ImageDescription) -> np.ndarray:
        return imagecodecs.jpegxl_decode(data, numthreads=1)


class Jpeg2000Codec(FrameCodec):
    """Reversible (5/3 wavelet) JPEG 2000, the lossless codec most PACS use."""

    name = "jpeg2000"
    available = bool(imagecodecs.JPEG2K.available)
    library_errors = (imagecodecs.Jpeg2kError,)

    def encode_frame(self, frame: np.ndarray, bit_depth: int) -> bytes:
        return bytes(
            imagecodecs.jpeg2k_encode(
                np.ascontiguousarray(squeeze_samples(frame)),
                level=0,
                reversible=True,
                bitspersample=bit_depth,
                numthreads=1,
            )
        )

    def decode_frame(self, data: bytes, desc: ImageDescription) -> np.ndarray:
        return imagecodecs.jpeg2k_decode(data, numthreads=1)


class DeflateCodec(FrameCodec):
    """zlib over the raw little-endian samples: what a ZIP archive of the pixels would cost."""

    name = "deflate"
    available = True
    library_errors = (zlib.error,)

    def encode_frame(self, frame: np.ndarray, bit_depth: int) -> bytes:
        return zlib.compress(np.ascontiguousarray(frame).astype("<u2" if frame.itemsize > 1 else "u1"), 9)

    def decode_frame(self, data: bytes, desc: ImageDescription) -> np.ndarray:
        dtype = "<u2" if desc.bit_depth > 8 else "u1"
        return np.frombuffer(zlib.decompress(data), dtype).astype(desc.dtype)

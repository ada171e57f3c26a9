"""The `learned` storage codec: the pyramid model (model.py) and torchac over independent tiles,
alone or conditioned on a reference slice.

Every frame and every sample plane (colour is coded as three planes) is cut into tiles of
`tile` x `tile` pixels, edge tiles padded by edge replication to a multiple of 8. Each tile is
one independent stream, which bounds memory (a 4096 x 3328 mammogram holds one tile's
activations and CDFs at a time) and keeps damage local. A tile stream holds its coarsest
coded level (coarsest.py: JPEG XL, JPEG-LS or raw, whichever is smallest) and, for every
finer level, the four sub-pixel passes: (coded, raw) for three sub-pixels and the coded
remainder of the fourth. The encoder computes every learned stage once and then chooses the
level to start from that makes the stream smallest: 1..SCALES, or 0, the whole tile coded by
the standard codec, where the learned stages lose on that tile (backgrounds, text, flat or
synthetic regions) though they win on the rest of the image.

Series mode: `encode(..., reference=slice)` conditions the tiles of the first frame on the same
region of an already stored neighbouring slice (same rows, columns, samples and bit depth);
frame f > 0 of a multi-frame image is conditioned on frame f - 1 of the same payload, and
colour plane p > 0 may be conditioned on plane p - 1. Each tile keeps a reference only where
it makes that tile smaller (the third byte of its stream says which). Where a tile of the first
frame uses the reference, the payload records the SHA-256 of the reference's pixels and
decoding without the same reference raises LearnedDecodeError; where none does, the payload is
an ordinary single-image one (`uses_reference` is false) and nothing depends on the slice.
Images that use few of their values are coded as ranks in their value table (value_map.py),
sent once in the payload.

Payload (version 2): MAGIC, the weights' digest, the tile size, a reference flag and the
reference digest (zeros without), the SHA-256 of the pixels, the value table (length and
bytes, empty without), the stream count and lengths, then the streams. Decoding refuses other
weights and checks the pixels' digest, so a desynchronised decoder can only fail, never return
wrong pixels. Version 1 payloads (the auxiliary-symbol model) are refused with a clear error.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scp_node.imaging.codecs.base import Codec, CodecUnavailable, ImageDescription
from scp_node.imaging.codecs.learned import coarsest, entropy, pyramid, value_map, zoo
from scp_node.imaging.codecs.learned.model import (
    SCALES,
    StageContext,
    integer_mixture,
    stage_context,
)
from scp_node.imaging.errors import ImagingError

MAGIC = b"SEEDB2"
RETIRED_MAGICS = (b"SEEDB1",)
DEFAULT_TILE = 256
DEFAULT_SERIES_DEPTH = 4
DEFAULT_THREADS = 2  # tiles coded at once (torch and torchac release the GIL): the machine's two cores
STANDARD_RIVALS = ("jpegxl", "jpegls")
PARTS_PER_STAGE = 2 * (pyramid.SUB_PIXELS - 1) + 1  # (coded, raw) for three passes, one remainder
DIGEST_BYTES = 32
# The finest level a tile stream may start from: 0 codes the whole tile with the standard codec.
# Held out (32-channel run, step 26,500), this per-tile choice took the node's per-image choice
# from 1.0 % to 1.7 % under JPEG XL e7 (MG 2.3 -> 3.7 %, MR 0.1 -> 0.8 %), for one more standard
# encode per tile (encode 0.45 -> 0.40 MPix/s on 2 threads, 512 x 512 CT).
LOWEST_TOP = 0
# What a tile is coded against (the third byte of its stream).
ALONE, PREVIOUS_SLICE, PREVIOUS_PLANE = 0, 1, 2


class LearnedDecodeError(ImagingError):
    """The payload does not decode to the pixels it was made from (or needs other weights, or
    another reference slice)."""


class LearnedReferenceError(ImagingError):
    """The reference slice given to the encoder does not fit the image."""


@dataclass(frozen=True)
class Tile:
    frame: int
    plane: int
    top: int
    left: int
    rows: int
    columns: int

    @property
    def plane_key(self) -> tuple[int, int]:
        """Tiles with the same key are coded independently of each other."""
        return self.frame, self.plane

    @property
    def padded_shape(self) -> tuple[int, int]:
        multiple = 2**SCALES
        return -(-self.rows // multiple) * multiple, -(-self.columns // multiple) * multiple

    def region(self, plane: np.ndarray) -> torch.Tensor:
        """This tile of a (rows, columns) plane, padded, as (1, 1, H, W) int64."""
        values = plane[self.top : self.top + self.rows, self.left : self.left + self.columns]
        rows, columns = self.padded_shape
        padded = np.pad(
            values.astype(np.int64), ((0, rows - self.rows), (0, columns - self.columns)), mode="edge"
        )
        return torch.from_numpy(padded)[None, None]


class LearnedCodec(Codec):
    """Options: `weights` (a weight file; default the shipped one), `tile` (a multiple of 8),
    `compete` (default true: the node keeps a standard codec's blob where it is smaller;
    false keeps this codec's blob always, for evaluation), `series_depth` (default 4: the
    longest chain of slices each coded against the previous one; 0 codes every image alone),
    `threads` (default 2: tiles coded at once; the payload does not depend on it).

    Runs on the GPU when there is one, else on the CPU; blobs decode on either.
    """

    name = "learned"
    version = 2

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # The node keeps this codec's blob only where it beats these on the same image.
        self.competes_with = STANDARD_RIVALS if options.get("compete", True) else ()
        self.tile = int(options.get("tile", DEFAULT_TILE))
        self.series_depth = int(options.get("series_depth", DEFAULT_SERIES_DEPTH))
        self.threads = int(options.get("threads", DEFAULT_THREADS))
        if self.tile < 8 or self.tile % 8:
            raise ValueError(f"tile {self.tile} must be a positive multiple of 8")
        weights = Path(options.get("weights") or zoo.SHIPPED_WEIGHTS)
        if not weights.is_file():
            raise CodecUnavailable(f"learned codec weights not found at {weights}")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.digest, self.card = zoo.load_model(weights, self.device)
        self._retired: dict[bytes, LearnedCodec] = {}  # by weights digest, loaded when a blob needs them
        self._retired_lock = threading.Lock()

    def encode(
        self, pixels: np.ndarray, desc: ImageDescription, reference: np.ndarray | None = None
    ) -> bytes:
        """Code `pixels` (frames, rows, columns, samples), conditioned on `reference` (one
        already stored slice, (rows, columns, samples) or (1, rows, columns, samples)) if given."""
        reference = _checked_reference(reference, desc) if reference is not None else None
        values = value_map.build(pixels, desc.bit_depth)
        coded, coded_reference, bit_depth, table = pixels, reference, desc.bit_depth, b""
        if values is not None:
            coded, bit_depth = value_map.ranks(pixels, values), value_map.rank_bits(values)
            coded_reference = value_map.ranks(reference, values) if reference is not None else None
            table = value_map.to_bytes(values)
        tiles = _tiles(desc, self.tile)
        with ThreadPoolExecutor(self.threads, thread_name_prefix="learned-tile") as pool:
            streams = list(
                pool.map(
                    lambda spec: self._encode_tile(
                        coded[spec.frame, :, :, spec.plane],
                        _references(coded, coded_reference, spec),
                        spec,
                        bit_depth,
                    ),
                    tiles,
                )
            )
        used = reference is not None and any(
            spec.frame == 0 and stream[2] == PREVIOUS_SLICE
            for spec, stream in zip(tiles, streams, strict=True)
        )
        reference_digest = _pixel_digest(reference) if used else bytes(DIGEST_BYTES)
        header = MAGIC + self.digest + struct.pack("<IB", self.tile, used) + reference_digest
        header += _pixel_digest(pixels) + struct.pack("<I", len(table)) + table
        header += struct.pack(f"<I{len(streams)}Q", len(streams), *map(len, streams))
        return header + b"".join(streams)

    def uses_reference(self, payload: bytes) -> bool:
        return self._codec_for(payload)._parse(payload)[2] is not None

    def decode(
        self, payload: bytes, desc: ImageDescription, reference: np.ndarray | None = None
    ) -> np.ndarray:
        coder = self._codec_for(payload)
        if coder is not self:
            return coder.decode(payload, desc, reference)
        try:
            return self._decode(payload, desc, reference)
        except LearnedDecodeError:
            raise
        except (ValueError, RuntimeError, IndexError, struct.error) as exc:  # torch, torchac, numpy
            raise LearnedDecodeError(f"damaged learned-codec payload: {exc}") from exc

    def _decode(self, payload: bytes, desc: ImageDescription, reference: np.ndarray | None) -> np.ndarray:
        streams, tile, reference_digest, expected_digest, table = self._parse(payload)
        if reference_digest is None:
            reference = None
        elif reference is None:
            raise LearnedDecodeError("payload was coded against a reference slice; none was given")
        else:
            reference = _checked_reference(reference, desc)
            if _pixel_digest(reference) != reference_digest:
                raise LearnedDecodeError(
                    "the reference slice given is not the one the payload was coded against"
                )
        bit_depth, values = desc.bit_depth, None
        if table:
            values = value_map.from_bytes(table, desc.bit_depth)
            bit_depth = value_map.rank_bits(values)
            reference = value_map.ranks(reference, values) if reference is not None else None
        tiles = _tiles(desc, tile)
        if len(tiles) != len(streams):
            raise LearnedDecodeError(f"payload has {len(streams)} streams, the image needs {len(tiles)}")
        coded = np.zeros(desc.shape, np.uint16)  # values or ranks: 16 bits at most

        def decode_tile(spec: Tile, stream: bytes) -> None:
            decoded = self._decode_tile(stream, _references(coded, reference, spec), spec, bit_depth)
            rows = slice(spec.top, spec.top + spec.rows)
            columns = slice(spec.left, spec.left + spec.columns)
            coded[spec.frame, rows, columns, spec.plane] = decoded

        # The tiles of one plane of one frame are independent; a plane's references (the
        # previous frame, the previous plane) are decoded before it.
        with ThreadPoolExecutor(self.threads, thread_name_prefix="learned-tile") as pool:
            for _, group in groupby(zip(tiles, streams, strict=True), key=lambda pair: pair[0].plane_key):
                list(pool.map(lambda pair: decode_tile(*pair), group))
        out = value_map.restore(coded, values, desc.dtype) if values is not None else coded.astype(desc.dtype)
        if _pixel_digest(out) != expected_digest:
            raise LearnedDecodeError("decoded pixels do not match the payload's SHA-256")
        return out

    def _codec_for(self, payload: bytes) -> LearnedCodec:
        """This codec, or for a payload that weights shipped earlier coded (and a codec on the
        shipped weights), one on those: updating the shipped weights leaves old blobs readable."""
        digest = payload[len(MAGIC) : len(MAGIC) + len(self.digest)]
        if not payload.startswith(MAGIC) or digest == self.digest or self.options.get("weights"):
            return self
        with self._retired_lock:
            if digest not in self._retired:
                path = zoo.retired_weights(digest)
                if path is None:
                    return self  # refused below, naming both digests
                self._retired[digest] = LearnedCodec(**{**self.options, "weights": str(path)})
            return self._retired[digest]

    def _parse(self, payload: bytes) -> tuple[list[bytes], int, bytes | None, bytes, bytes]:
        if payload.startswith(RETIRED_MAGICS):
            raise LearnedDecodeError("version 1 learned-codec payloads are no longer decodable")
        if not payload.startswith(MAGIC):
            raise LearnedDecodeError("not a learned-codec payload")
        offset = len(MAGIC)
        digest = payload[offset : offset + len(self.digest)]
        if digest != self.digest:
            raise LearnedDecodeError(
                f"payload was coded with weights {digest.hex()}, these are {self.digest.hex()}"
            )
        offset += len(self.digest)
        tile, has_reference = struct.unpack_from("<IB", payload, offset)
        offset += 5
        reference_digest = payload[offset : offset + DIGEST_BYTES] if has_reference else None
        pixel_digest = payload[offset + DIGEST_BYTES : offset + 2 * DIGEST_BYTES]
        offset += 2 * DIGEST_BYTES
        (table_length,) = struct.unpack_from("<I", payload, offset)
        table = payload[offset + 4 : offset + 4 + table_length]
        offset += 4 + table_length
        (count,) = struct.unpack_from("<I", payload, offset)
        lengths = struct.unpack_from(f"<{count}Q", payload, offset + 4)
        position = offset + 4 + 8 * count
        if position + sum(lengths) != len(payload):
            raise LearnedDecodeError("payload length does not match its streams")
        streams = []
        for length in lengths:
            streams.append(payload[position : position + length])
            position += length
        return streams, tile, reference_digest, pixel_digest, table

    def _encode_tile(
        self, plane: np.ndarray, references: dict[int, np.ndarray], spec: Tile, bit_depth: int
    ) -> bytes:
        """The smallest of the tile's streams alone and against each reference it may use."""
        levels = pyramid.build(spec.region(plane).to(self.device), SCALES)
        tops = {
            top: coarsest.encode(levels[top][0, 0].cpu().numpy(), bit_depth)
            for top in range(LOWEST_TOP, SCALES + 1)
        }
        best = self._encode_levels(levels, tops, ALONE, None, bit_depth)
        for kind, reference in references.items():
            reference_levels = pyramid.build(spec.region(reference).to(self.device), SCALES)
            best = _smaller(best, self._encode_levels(levels, tops, kind, reference_levels, bit_depth))
        return best

    def _encode_levels(
        self,
        levels: list[torch.Tensor],
        tops: dict[int, tuple[int, bytes]],
        kind: int,
        reference_levels: list[torch.Tensor] | None,
        bit_depth: int,
    ) -> bytes:
        """The smallest stream over the levels it could start from: level `top` coded by
        `tops[top]`, then the learned stages below it."""
        stages = [self._encode_stage(stage, levels, reference_levels, bit_depth) for stage in range(SCALES)]
        options = []
        for top, (codec_id, level) in tops.items():
            parts = [level] + [part for stage in reversed(range(top)) for part in stages[stage]]
            header = struct.pack("<BBB", top, codec_id, kind)
            options.append(header + _join(parts))
        return min(options, key=len)

    def _encode_stage(
        self,
        stage: int,
        levels: list[torch.Tensor],
        reference_levels: list[torch.Tensor] | None,
        bit_depth: int,
    ) -> list[bytes]:
        context = self._context(stage, levels[stage + 1], reference_levels)
        sub = pyramid.sub_pixels(levels[stage])
        parts: list[bytes] = []
        with torch.no_grad():
            features = self.model.features(stage, context)
            for k in range(pyramid.SUB_PIXELS):
                mixture = integer_mixture(
                    self.model.pass_parameters(stage, k, features, context, sub), context, k
                )
                values = sub[:, k].reshape(-1)
                if k < pyramid.SUB_PIXELS - 1:
                    parts += entropy.encode(values, mixture, bit_depth)
                else:
                    base = pyramid.last_sub_pixel_base(context.coarse, sub[:, :3]).reshape(-1)
                    parts.append(entropy.encode_remainder(values, base, mixture, bit_depth))
        return parts

    def _decode_tile(
        self, stream: bytes, references: dict[int, np.ndarray], spec: Tile, bit_depth: int
    ) -> np.ndarray:
        top, codec_id, kind = struct.unpack_from("<BBB", stream)
        if not 0 <= top <= SCALES:
            raise LearnedDecodeError(f"tile stream starts at level {top}")
        parts = _split(stream[3:], 1 + PARTS_PER_STAGE * top)
        reference_levels = None
        if kind != ALONE:
            if kind not in references:
                raise LearnedDecodeError(f"a tile is coded against reference {kind}, which this image lacks")
            reference_levels = pyramid.build(spec.region(references[kind]).to(self.device), SCALES)
        rows, columns = spec.padded_shape
        level_values = coarsest.decode(codec_id, parts[0], rows >> top, columns >> top, bit_depth)
        level = torch.from_numpy(level_values)[None, None].to(self.device)
        with torch.no_grad():
            for position, stage in enumerate(reversed(range(top))):
                first = 1 + PARTS_PER_STAGE * position
                level = self._decode_stage(
                    stage, level, reference_levels, parts[first : first + PARTS_PER_STAGE], bit_depth
                )
        return level[0, 0, : spec.rows, : spec.columns].cpu().numpy()

    def _decode_stage(
        self,
        stage: int,
        coarse: torch.Tensor,
        reference_levels: list[torch.Tensor] | None,
        parts: list[bytes],
        bit_depth: int,
    ) -> torch.Tensor:
        context = self._context(stage, coarse, reference_levels)
        features = self.model.features(stage, context)
        decoded = torch.zeros(
            coarse.shape[0], pyramid.SUB_PIXELS, *coarse.shape[-2:], dtype=torch.int64, device=coarse.device
        )
        for k in range(pyramid.SUB_PIXELS):
            mixture = integer_mixture(
                self.model.pass_parameters(stage, k, features, context, decoded), context, k
            )
            if k < pyramid.SUB_PIXELS - 1:
                values = entropy.decode(parts[2 * k], parts[2 * k + 1], mixture, bit_depth)
            else:
                base = pyramid.last_sub_pixel_base(context.coarse, decoded[:, :3]).reshape(-1)
                values = entropy.decode_remainder(parts[-1], base, mixture, bit_depth)
            decoded[:, k] = values.view(decoded[:, k].shape).to(decoded.device)
        return pyramid.merge(decoded)

    def _context(
        self, stage: int, coarse: torch.Tensor, reference_levels: list[torch.Tensor] | None
    ) -> StageContext:
        if reference_levels is None:
            return stage_context(coarse)
        return stage_context(coarse, reference_levels[stage], reference_levels[stage + 1])


def _references(image: np.ndarray, reference: np.ndarray | None, spec: Tile) -> dict[int, np.ndarray]:
    """The planes a tile may be coded against, by kind: the same plane of the previous frame
    (for the first frame, of the reference slice), and the previous plane of its own frame
    (colour planes are alike; a grey image stored as RGB has three equal ones). `image` holds
    every earlier tile's values already, on both sides of the coder."""
    references = {}
    if spec.frame > 0:
        references[PREVIOUS_SLICE] = image[spec.frame - 1, :, :, spec.plane]
    elif reference is not None:
        references[PREVIOUS_SLICE] = reference[:, :, spec.plane]
    if spec.plane > 0:
        references[PREVIOUS_PLANE] = image[spec.frame, :, :, spec.plane - 1]
    return references


def _smaller(best: bytes, candidate: bytes) -> bytes:
    """The tile stream to keep; the earlier on a tie, so that a tile depends on a reference
    only where the reference pays."""
    return candidate if len(candidate) < len(best) else best


def _checked_reference(reference: np.ndarray, desc: ImageDescription) -> np.ndarray:
    """The reference as (rows, columns, samples) of the image's dtype, or LearnedReferenceError."""
    shape = (desc.rows, desc.columns, desc.samples)
    if reference.shape not in (shape, (1, *shape)):
        raise LearnedReferenceError(f"reference slice is {reference.shape}, the image needs {shape}")
    values = np.asarray(reference).reshape(shape)
    if values.size and (values.min() < 0 or int(values.max()) >= 1 << desc.bit_depth):
        raise LearnedReferenceError(f"reference slice has values outside {desc.bit_depth} bits")
    return values.astype(desc.dtype)


def _tiles(desc: ImageDescription, tile: int) -> list[Tile]:
    return [
        Tile(frame, plane, top, left, min(tile, desc.rows - top), min(tile, desc.columns - left))
        for frame in range(desc.frames)
        for plane in range(desc.samples)
        for top in range(0, desc.rows, tile)
        for left in range(0, desc.columns, tile)
    ]


def _pixel_digest(pixels: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype="<u2").tobytes()).digest()


def _join(parts: list[bytes]) -> bytes:
    return struct.pack(f"<{len(parts)}I", *map(len, parts)) + b"".join(parts)


def _split(stream: bytes, count: int) -> list[bytes]:
    lengths = struct.unpack_from(f"<{count}I", stream)
    offset, parts = 4 * count, []
    for length in lengths:
        parts.append(stream[offset : offset + length])
        offset += length
    if offset != len(stream):
        raise LearnedDecodeError("tile stream length does not match its parts")
    return parts

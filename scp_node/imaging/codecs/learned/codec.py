"""The `learned` storage codec: Seed B's model and torchac over independent tiles.

Every frame and every sample plane (colour is coded as three planes) is cut into tiles of
`tile` x `tile` pixels. Each tile is one independent stream: its coarsest auxiliary symbols
raw, then the symbols of the finer scales and finally its pixels, each under the mixtures the
model predicts from the scale above. Tiles bound memory (a tile's CDFs and activations, not the
image's) and keep one damaged or slow stream local. Edge tiles are padded by edge replication
to a multiple of 8; only their real pixels are coded.

Payload: MAGIC, the weights' digest, the tile size, the SHA-256 of the pixels, the stream
count and lengths, then the streams. Decoding refuses other weights and checks the pixels'
digest, so a desynchronised decoder can only fail, never return wrong pixels.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scp_node.imaging.codecs.base import Codec, CodecUnavailable, ImageDescription
from scp_node.imaging.codecs.learned import entropy, zoo
from scp_node.imaging.codecs.learned.model import AUX_BITS, SCALES, integer_mixture
from scp_node.imaging.errors import ImagingError

MAGIC = b"SEEDB1"
DEFAULT_TILE = 256
TILES_PER_BATCH = 4  # tiles run through the network together; bounds memory, not results
PARTS_PER_STREAM = 7  # z3, then (coded, raw) for z2, z1 and the pixels
STANDARD_RIVALS = ("jpegxl", "jpegls")


class LearnedDecodeError(ImagingError):
    """The payload does not decode to the pixels it was made from (or needs other weights)."""


@dataclass(frozen=True)
class Tile:
    frame: int
    plane: int
    top: int
    left: int
    rows: int
    columns: int


class LearnedCodec(Codec):
    """Options: `weights` (a weight file; default the shipped one), `tile` (a multiple of 8),
    `compete` (default true: the node keeps a standard codec's blob where it is smaller;
    false keeps this codec's blob always, for evaluation).

    Runs on the GPU when there is one, else on the CPU; blobs decode on either.
    """

    name = "learned"
    version = 1

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # The node keeps this codec's blob only where it beats these on the same image.
        self.competes_with = STANDARD_RIVALS if options.get("compete", True) else ()
        self.tile = int(options.get("tile", DEFAULT_TILE))
        if self.tile < 8 or self.tile % 8:
            raise ValueError(f"tile {self.tile} must be a positive multiple of 8")
        weights = Path(options.get("weights") or zoo.SHIPPED_WEIGHTS)
        if not weights.is_file():
            raise CodecUnavailable(f"learned codec weights not found at {weights}")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.digest, self.card = zoo.load_model(weights, self.device)

    def encode(self, pixels: np.ndarray, desc: ImageDescription) -> bytes:
        tiles = _tiles(desc, self.tile)
        streams: list[bytes] = []
        for batch in _batches(tiles):
            streams += self._encode_batch(pixels, batch, desc.bit_depth)
        header = MAGIC + self.digest + struct.pack("<I", self.tile) + _pixel_digest(pixels)
        header += struct.pack(f"<I{len(streams)}Q", len(streams), *map(len, streams))
        return header + b"".join(streams)

    def decode(self, payload: bytes, desc: ImageDescription) -> np.ndarray:
        streams, tile, expected_digest = self._parse(payload)
        tiles = _tiles(desc, tile)
        if len(tiles) != len(streams):
            raise LearnedDecodeError(f"payload has {len(streams)} streams, the image needs {len(tiles)}")
        out = np.empty(desc.shape, desc.dtype)
        position = 0
        for batch in _batches(tiles):
            values = self._decode_batch(streams[position : position + len(batch)], batch, desc.bit_depth)
            for spec, tile_values in zip(batch, values, strict=True):
                rows = slice(spec.top, spec.top + spec.rows)
                columns = slice(spec.left, spec.left + spec.columns)
                out[spec.frame, rows, columns, spec.plane] = tile_values
            position += len(batch)
        if _pixel_digest(out) != expected_digest:
            raise LearnedDecodeError("decoded pixels do not match the payload's SHA-256")
        return out

    def _parse(self, payload: bytes) -> tuple[list[bytes], int, bytes]:
        if not payload.startswith(MAGIC):
            raise LearnedDecodeError("not a learned-codec payload")
        offset = len(MAGIC)
        digest = payload[offset : offset + len(self.digest)]
        if digest != self.digest:
            raise LearnedDecodeError(
                f"payload was coded with weights {digest.hex()}, these are {self.digest.hex()}"
            )
        offset += len(self.digest)
        (tile,) = struct.unpack_from("<I", payload, offset)
        pixel_digest = payload[offset + 4 : offset + 36]
        (count,) = struct.unpack_from("<I", payload, offset + 36)
        lengths = struct.unpack_from(f"<{count}Q", payload, offset + 40)
        position = offset + 40 + 8 * count
        streams = []
        for length in lengths:
            streams.append(payload[position : position + length])
            position += length
        return streams, tile, pixel_digest

    def _encode_batch(self, pixels: np.ndarray, batch: list[Tile], bit_depth: int) -> list[bytes]:
        padded = torch.from_numpy(np.stack([_padded_tile(pixels, spec) for spec in batch]))
        image = padded.to(self.device, torch.float32)[:, None]
        parts: list[list[bytes]] = [[] for _ in batch]
        with torch.no_grad():
            symbols = self.model.analyse(image, bit_depth)
            for index in range(len(batch)):
                parts[index].append(_pack_nibbles(symbols[-1][index]))
            features = None
            for scale in reversed(range(SCALES)):
                raw, features = self.model.predict(scale, symbols[scale], features)
                depth = bit_depth if scale == 0 else AUX_BITS
                target = image if scale == 0 else symbols[scale - 1]
                for index, spec in enumerate(batch):
                    tile_raw, tile_target = raw[index], target[index]
                    if scale == 0:
                        tile_raw = tile_raw[:, : spec.rows, : spec.columns]
                        tile_target = tile_target[:, : spec.rows, : spec.columns]
                    mixture = integer_mixture(tile_raw, depth)
                    coded, raw_bits = entropy.encode(tile_target.reshape(-1).long(), mixture, depth)
                    parts[index] += [coded, raw_bits]
        return [_join(stream) for stream in parts]

    def _decode_batch(self, streams: list[bytes], batch: list[Tile], bit_depth: int) -> list[np.ndarray]:
        parts = [_split(stream) for stream in streams]
        padded_rows, padded_columns = _padded_shape(batch[0])
        aux = self.model.config.aux_channels
        coarsest = (aux, padded_rows >> SCALES, padded_columns >> SCALES)
        with torch.no_grad():
            symbols = torch.stack([_unpack_nibbles(p[0], coarsest) for p in parts]).to(self.device)
            features, pixels = None, []
            for scale in reversed(range(SCALES)):
                raw, features = self.model.predict(scale, symbols, features)
                depth = bit_depth if scale == 0 else AUX_BITS
                decoded = []
                for index, spec in enumerate(batch):
                    coded, raw_bits = _scale_parts(parts[index], scale)
                    tile_raw = raw[index]
                    if scale == 0:
                        tile_raw = tile_raw[:, : spec.rows, : spec.columns]
                    values = entropy.decode(coded, raw_bits, integer_mixture(tile_raw, depth), depth)
                    decoded.append(values.view(tile_raw.shape[:3]))
                if scale == 0:
                    pixels = [values[0].cpu().numpy() for values in decoded]
                else:
                    symbols = torch.stack(decoded).to(self.device, torch.float32)
        return pixels


def _scale_parts(parts: list[bytes], scale: int) -> list[bytes]:
    """(coded, raw) of `scale` in a stream [z3, then (coded, raw) for scales 2, 1, 0]."""
    first = 1 + 2 * (SCALES - 1 - scale)
    return parts[first : first + 2]


def _tiles(desc: ImageDescription, tile: int) -> list[Tile]:
    return [
        Tile(frame, plane, top, left, min(tile, desc.rows - top), min(tile, desc.columns - left))
        for frame in range(desc.frames)
        for plane in range(desc.samples)
        for top in range(0, desc.rows, tile)
        for left in range(0, desc.columns, tile)
    ]


def _padded_shape(spec: Tile) -> tuple[int, int]:
    return -(-spec.rows // 8) * 8, -(-spec.columns // 8) * 8


def _batches(tiles: list[Tile]) -> list[list[Tile]]:
    """Consecutive tiles of one padded shape, at most TILES_PER_BATCH together."""
    batches: list[list[Tile]] = []
    for spec in tiles:
        if (
            batches
            and len(batches[-1]) < TILES_PER_BATCH
            and _padded_shape(batches[-1][0]) == _padded_shape(spec)
        ):
            batches[-1].append(spec)
        else:
            batches.append([spec])
    return batches


def _padded_tile(pixels: np.ndarray, spec: Tile) -> np.ndarray:
    region = pixels[
        spec.frame, spec.top : spec.top + spec.rows, spec.left : spec.left + spec.columns, spec.plane
    ]
    rows, columns = _padded_shape(spec)
    return np.pad(
        region.astype(np.float32), ((0, rows - spec.rows), (0, columns - spec.columns)), mode="edge"
    )


def _pixel_digest(pixels: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype="<u2").tobytes()).digest()


def _pack_nibbles(symbols: torch.Tensor) -> bytes:
    values = symbols.reshape(-1).to("cpu").numpy().astype(np.uint8)
    if values.size % 2:
        values = np.append(values, np.uint8(0))
    return (values[0::2] << 4 | values[1::2]).tobytes()


def _unpack_nibbles(data: bytes, shape: tuple[int, int, int]) -> torch.Tensor:
    packed = np.frombuffer(data, np.uint8)
    values = np.stack([packed >> 4, packed & 15], axis=1).reshape(-1)[: int(np.prod(shape))]
    if values.size != int(np.prod(shape)):
        raise LearnedDecodeError("coarsest symbols are cut short")
    return torch.from_numpy(values.astype(np.float32)).view(shape)


def _join(parts: list[bytes]) -> bytes:
    return struct.pack(f"<{len(parts)}I", *map(len, parts)) + b"".join(parts)


def _split(stream: bytes) -> list[bytes]:
    lengths = struct.unpack_from(f"<{PARTS_PER_STREAM}I", stream)
    offset, parts = 4 * PARTS_PER_STREAM, []
    for length in lengths:
        parts.append(stream[offset : offset + length])
        offset += length
    if offset != len(stream):
        raise LearnedDecodeError("tile stream length does not match its parts")
    return parts

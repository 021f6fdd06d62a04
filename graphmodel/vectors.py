"""Centroids as compact float32 bytes: the graph's largest properties, read only by whole-circuit reads.

A centroid has one value per channel of the layer below (2,048 on a ResNet-50), on every semantic
group and neuron group, and no query compares them. Stored as a list of floats, Neo4j keeps 8 bytes
per value; as little-endian float32 bytes, 4. The core gives float32 centroids (means of float32
activations), so they are stored exactly. Graphs written before version 2 of the schema hold
lists; `unpack_f32` reads both.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence


def pack_f32(values: Sequence[float]) -> bytes:
    """Little-endian float32 bytes of ``values``."""
    packed = array("f", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_f32(stored: bytes | bytearray | Sequence[float] | None) -> list[float]:
    """The floats of a stored centroid: float32 bytes (schema 2) or a list of floats (schema 1)."""
    if stored is None:
        return []
    if not isinstance(stored, (bytes, bytearray)):
        return [float(v) for v in stored]
    if len(stored) % 4:
        raise ValueError(f"a float32 centroid has a multiple of 4 bytes, not {len(stored)}")
    values = array("f")
    values.frombytes(bytes(stored))
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()

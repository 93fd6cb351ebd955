"""Reading a W&B run's own transaction log (``run-<id>.wandb``) without W&B's reader.

Framing (LevelDB's log format as W&B writes it): a 7-byte file header ``b":W&B"``, magic
``0xBEE1`` (uint16 LE) and version 0 (uint8); then 32 KiB blocks (the first one counts the file
header) of chunks, each a 7-byte header — CRC-32 (zlib's, of the type byte followed by the data;
uint32 LE), data length (uint16 LE), type (1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST) — and its data. A
block's tail shorter than a chunk header is zero padding. FIRST + MIDDLE* + LAST chunks join into
one record. Each record is a ``wandb_internal_pb2.Record`` protobuf message.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_chunks(path: str | Path) -> list[bytes]:
    """The records' bytes of a ``.wandb`` file, with every chunk's CRC checked."""
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, magic, version)
    records, pending, pos = [], None, HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if length == 0 and kind == 0:  # zero padding up to the end of a block / file
            pos += left
            continue
        body = data[pos + HEADER:pos + HEADER + length]
        assert zlib.crc32(bytes([kind]) + body) & 0xFFFFFFFF == crc, f"bad CRC at byte {pos}"
        pos += HEADER + length
        if kind == FULL:
            records.append(body)
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            records.append(pending + body)
            pending = None
        else:
            raise AssertionError(f"unknown chunk type {kind} at byte {pos}")
    return records


def read_run(path: str | Path) -> dict[str, Any]:
    """``{"config": {key: value}, "history": [{key: value}, ...], "summary": {key: value},
    "files": [path, ...]}`` decoded from the run's ``.wandb`` file (values JSON-decoded; config
    updates and summary updates applied in order)."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "files": []}

    def key_of(item) -> str:
        return "/".join(item.nested_key) if item.nested_key else item.key

    for raw in read_chunks(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            for item in rec.run.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({key_of(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][key_of(item)] = json.loads(item.value_json)
        elif kind == "files":
            out["files"] += [f.path for f in rec.files.files]
    return out

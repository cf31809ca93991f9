"""Read a W&B offline run file (``run-<id>.wandb``) back: a LevelDB-style log of protobuf Records."""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data, pos, pending = Path(path).read_bytes(), 7, b""  # 7-byte file header ":W&B" + magic + version
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if length == 0 and kind == 0:
            pos += left - 7
            continue
        payload, pos = data[pos:pos + length], pos + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + payload)
            pending = b""
            yield record
        elif kind in (FIRST, MIDDLE):
            pending += payload


def read_run(path: Path) -> dict:
    """{"history": [...], "summary": {...}, "config": {...}, "tags": [...], "group": str, "name": str}.

    ``run.finish()`` can return before W&B's service has written the offline file (one try in three
    left only its 7-byte header here); ``wandb.teardown()`` waits for the service to flush and stop,
    as the interpreter's exit does for a user's process.
    """
    import wandb

    wandb.teardown()
    out = {"history": [], "summary": {}, "config": {}, "tags": [], "group": None, "name": None}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({i.key: json.loads(i.value_json) for i in rec.summary.update if i.key})
        elif kind == "run":
            out["tags"], out["group"], out["name"] = list(rec.run.tags), rec.run.run_group, rec.run.display_name
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    return out

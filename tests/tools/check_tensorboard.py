#!/usr/bin/python3
"""Independent check of dtrain's TensorBoard event files (not dtrain's code).

usage: check_tensorboard.py OUTPUTS_DIR [WORKSPACE_DB RUN_ID]

Reads every events.out.tfevents.* file under OUTPUTS_DIR/tensorboard with Debian's
python3-protobuf and python3-crc32c: checks both masked CRC-32Cs of every record, that each file
starts with the file_version "brain.Event:2" event, and that the scalar tags, steps and values
equal OUTPUTS_DIR/metrics.jsonl (and the per-step losses in the workspace database, if given).
Exit 0 when all holds, 1 with a list of problems otherwise.
"""
import glob
import json
import math
import os
import sqlite3
import struct
import sys

import crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def _event_class():
    """tensorboard.Event / Summary with the field numbers of TensorBoard's event.proto and
    summary.proto, declared here from TensorBoard's published layout."""
    fd = descriptor_pb2.FileDescriptorProto(name="tb_check.proto", package="tbcheck",
                                            syntax="proto3")
    value = descriptor_pb2.DescriptorProto(name="Value")
    value.field.add(name="node_name", number=7, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    value.field.add(name="simple_value", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL,
                    oneof_index=0)
    value.oneof_decl.add(name="value")
    summary = fd.message_type.add(name="Summary")
    summary.nested_type.add().CopyFrom(value)
    summary.field.add(name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                      type_name=".tbcheck.Summary.Value")
    event = fd.message_type.add(name="Event")
    event.field.add(name="wall_time", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    event.field.add(name="step", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    event.field.add(name="file_version", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL,
                    oneof_index=0)
    event.field.add(name="summary", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                    type_name=".tbcheck.Summary", oneof_index=0)
    event.oneof_decl.add(name="what")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    desc = pool.FindMessageTypeByName("tbcheck.Event")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


def masked(data):
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path, problems):
    with open(path, "rb") as f:
        blob = f.read()
    pos, out = 0, []
    while pos < len(blob):
        if pos + 12 > len(blob):
            problems.append(f"{path}: truncated header at byte {pos}")
            break
        length_bytes = blob[pos:pos + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", blob[pos + 8:pos + 12])
        if length_crc != masked(length_bytes):
            problems.append(f"{path}: bad length CRC at byte {pos}")
            break
        data = blob[pos + 12:pos + 12 + length]
        if len(data) != length or pos + 16 + length > len(blob):
            problems.append(f"{path}: truncated record at byte {pos}")
            break
        (data_crc,) = struct.unpack("<I", blob[pos + 12 + length:pos + 16 + length])
        if data_crc != masked(data):
            problems.append(f"{path}: bad data CRC at byte {pos}")
        out.append(data)
        pos += 16 + length
    return out


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def main():
    if len(sys.argv) not in (2, 4):
        print(__doc__, file=sys.stderr)
        return 2
    outputs = sys.argv[1]
    Event = _event_class()
    problems = []
    files = sorted(glob.glob(os.path.join(outputs, "tensorboard", "events.out.tfevents.*")))
    if not files:
        problems.append("no event files")
    scalars = {}  # (tag, step) -> value; later records win, as TensorBoard shows the latest
    for path in files:
        records = read_records(path, problems)
        for i, data in enumerate(records):
            e = Event()
            e.ParseFromString(data)
            if i == 0 and e.file_version != "brain.Event:2":
                problems.append(f"{path}: first event is not file_version brain.Event:2")
            if e.HasField("summary"):
                for v in e.summary.value:
                    scalars[(v.tag, e.step)] = v.simple_value
    expected = {}
    with open(os.path.join(outputs, "metrics.jsonl")) as f:
        for line in f:
            m = json.loads(line)
            for tag, key in [("train/loss", "train_loss"), ("train/accuracy", "train_acc"),
                             ("validation/loss", "validation_loss"),
                             ("validation/accuracy", "validation_acc"),
                             ("learning_rate", "learning_rate"),
                             ("throughput/samples_per_second", "samples_per_second"),
                             ("sync/seconds", "sync_seconds")]:
                expected[(tag, m["epoch"])] = m[key]
    if len(sys.argv) == 4:
        db = sqlite3.connect(sys.argv[2])
        rows = db.execute("SELECT step, value FROM metrics WHERE run_id = ? AND key = 'step_loss'",
                          (sys.argv[3],)).fetchall()
        if not rows:
            problems.append("the workspace has no step_loss for the run")
        for step, value in rows:
            expected[("train/step_loss", step)] = value
    for key, want in sorted(expected.items()):
        got = scalars.get(key)
        if got is None:
            problems.append(f"missing scalar {key[0]} at step {key[1]}")
        elif not close(got, want):
            problems.append(f"{key[0]} at step {key[1]}: {got} in the events, {want} expected")
    for key in sorted(set(scalars) - set(expected)):
        problems.append(f"unexpected scalar {key[0]} at step {key[1]}")
    for p in problems:
        print("PROBLEM:", p)
    print(f"checked {len(files)} files, {len(scalars)} scalars: "
          f"{'ok' if not problems else str(len(problems)) + ' problems'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

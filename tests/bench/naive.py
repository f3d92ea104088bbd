"""The naive shipper loop, the reference the agent must beat: decode every line into a dict with msgspec, encode it
again. Single-threaded, what a straightforward Python shipper does per event. With ``--zstd LEVEL`` it also
compresses its output as the file sink does (batches of at most 4096 events or 4 MiB, one zstd frame each, with
checksums), so that the comparison can include the compression the agent does.

Run as its own process by the benchmark (``python -m tests.bench.naive [--zstd LEVEL] FILE...``) so its CPU time
and RSS are its own; prints one JSON line.
"""

from __future__ import annotations

import json
import sys

import msgspec

BATCH_EVENTS = 4096
BATCH_BYTES = 4 << 20


def main(argv: list[str]) -> int:
    level = None
    if argv[:1] == ["--zstd"]:
        level, argv = int(argv[1]), argv[2:]
    decode, encode = msgspec.json.decode, msgspec.json.encode
    compress = None
    if level is not None:
        import zstandard

        compress = zstandard.ZstdCompressor(level=level, write_checksum=True).compress
    events = bytes_out = 0
    batch: list[bytes] = []
    size = 0
    for path in argv:
        with open(path, "rb") as fh:
            for line in fh:
                out = encode(decode(line))
                events += 1
                if compress is None:
                    bytes_out += len(out)
                    continue
                batch.append(out)
                size += len(out) + 1
                if len(batch) >= BATCH_EVENTS or size >= BATCH_BYTES:
                    bytes_out += len(compress(b"\n".join(batch) + b"\n"))
                    batch, size = [], 0
    if compress is not None and batch:
        bytes_out += len(compress(b"\n".join(batch) + b"\n"))
    print(json.dumps({"events": events, "bytes_out": bytes_out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

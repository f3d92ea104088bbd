"""Child process for test_spool_crash: appends and acks records until SIGKILLed.

usage: python spool_writer.py DIR SEED FIRST_NUMBER MAX_BYTES SEGMENT_BYTES

stdout protocol, one line each, written and flushed only once the fact is durable:
    R            the spool is open (recovery done)
    D <n>        record number n was appended and append returned (fsynced)
    a <n>        record number n is about to be acked (printed first: an automatic flush inside a later
                 append may make the ack durable without an A line)
    A <n>        record number n was acked and flush_acks returned (the ack is durable)
A record's meta is b"<n>" and its payload b"<n>:" + body + sha256(b"<n>:" + body), so the parent can check
every replayed record without sharing code with this script.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

from kube_audit_shipper.delivery.spool import RecordId, Spool, SpoolFullError


def payload(n: int, rng: random.Random) -> bytes:
    head = b"%d:" % n
    line = b'{"n":%d,"verb":"list","objectRef":{"resource":"pods"}}\n' % n
    body = line * rng.randrange(1, 400) + rng.randbytes(rng.randrange(0, 20_000))
    return head + body + hashlib.sha256(head + body).digest()


def main() -> None:
    directory, seed, number, max_bytes, segment_bytes = sys.argv[1], *map(int, sys.argv[2:6])
    rng = random.Random(seed)
    spool = Spool(Path(directory), max_bytes=max_bytes, segment_bytes=segment_bytes, ack_flush_every=16)
    pending: list[tuple[RecordId, int]] = []  # unacked, from earlier runs and this one
    after = None
    while batch := spool.next_unacked(50, after=after):
        pending.extend((r.id, int(r.meta)) for r in batch)
        after = batch[-1].id
    print("R", flush=True)
    unflushed: list[int] = []
    while True:
        if rng.random() < 0.6:
            k = rng.randint(1, 4)
            records = [(payload(number + i, rng), b"%d" % (number + i)) for i in range(k)]
            try:
                ids = spool.append_many(records) if k > 1 else [spool.append(*records[0])]
            except SpoolFullError:
                ids = []
            for i, rid in enumerate(ids):
                pending.append((rid, number + i))
                print(f"D {number + i}", flush=True)
            number += k
            if ids:
                continue
        for _ in range(min(len(pending), rng.randint(1, 8))):  # out of order
            rid, n = pending.pop(rng.randrange(len(pending)))
            print(f"a {n}", flush=True)
            spool.ack(rid)
            unflushed.append(n)
        if rng.random() < 0.5:
            spool.flush_acks()
            for n in unflushed:
                print(f"A {n}", flush=True)
            unflushed.clear()


if __name__ == "__main__":
    main()

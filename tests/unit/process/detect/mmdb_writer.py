"""A minimal MaxMind DB (MMDB v2) writer, for tests that need a real database file to open with `maxminddb`.

Follows the MaxMind DB File Format Specification 2.0: a binary search tree of 24-bit records over IPv6 (IPv4
networks live under ::/96, where readers look them up), 16 zero bytes, the data section (each record a map,
written once, no pointers), then the metadata marker and the metadata map. Types written: UTF-8 string, double,
uint16/32/64, map, array, boolean.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from typing import Any

_METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
_STRING, _DOUBLE, _UINT16, _UINT32, _MAP = 2, 3, 5, 6, 7
_UINT64, _ARRAY, _BOOLEAN = 9, 11, 14


def _control(type_number: int, size: int) -> bytes:
    if size < 29:
        size_bits, extra = size, b""
    elif size < 29 + 256:
        size_bits, extra = 29, bytes([size - 29])
    elif size < 285 + 65536:
        size_bits, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        size_bits, extra = 31, (size - 65821).to_bytes(3, "big")
    if type_number <= 7:
        return bytes([(type_number << 5) | size_bits]) + extra
    return bytes([size_bits, type_number - 7]) + extra


def _uint(type_number: int, value: int) -> bytes:
    payload = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return _control(type_number, len(payload)) + payload


def encode(value: Any) -> bytes:
    """One value in the MMDB data section encoding."""
    if isinstance(value, bool):
        return _control(_BOOLEAN, int(value))
    if isinstance(value, str):
        data = value.encode()
        return _control(_STRING, len(data)) + data
    if isinstance(value, float):
        return _control(_DOUBLE, 8) + struct.pack(">d", value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError("negative integers are not needed here")
        return _uint(_UINT32 if value < 1 << 32 else _UINT64, value)
    if isinstance(value, dict):
        return _control(_MAP, len(value)) + b"".join(encode(str(key)) + encode(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return _control(_ARRAY, len(value)) + b"".join(encode(item) for item in value)
    raise TypeError(f"cannot encode {type(value).__name__}")


class _Node:
    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: list[Any] = [None, None]


def _bits(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[int]:
    if network.version == 4:
        value, length = int(network.network_address), 96 + network.prefixlen
    else:
        value, length = int(network.network_address), network.prefixlen
    return [(value >> (127 - position)) & 1 for position in range(length)]


def write_mmdb(path: str, records: dict[str, dict[str, Any]], *, database_type: str = "GeoLite2-City") -> None:
    """Write a database answering `records` (CIDR → record map) to `path`."""
    root = _Node()
    data = bytearray()
    for cidr, record in records.items():
        offset = len(data)
        data += encode(record)
        node = root
        bits = _bits(ipaddress.ip_network(cidr, strict=False))
        if not bits:
            raise ValueError("a network of length 0 is not needed here")
        for bit in bits[:-1]:
            child = node.children[bit]
            if not isinstance(child, _Node):
                if child is not None:
                    raise ValueError(f"{cidr} overlaps a network written before")
                child = node.children[bit] = _Node()
            node = child
        node.children[bits[-1]] = ("data", offset)
    order: list[_Node] = []
    queue = [root]
    while queue:
        node = queue.pop(0)
        order.append(node)
        queue.extend(child for child in node.children if isinstance(child, _Node))
    number = {id(node): index for index, node in enumerate(order)}
    node_count = len(order)

    def record(child: Any) -> int:
        if child is None:
            return node_count
        if isinstance(child, _Node):
            return number[id(child)]
        return node_count + 16 + child[1]

    tree = b"".join(record(node.children[0]).to_bytes(3, "big") + record(node.children[1]).to_bytes(3, "big") for node in order)
    metadata = (
        _control(_MAP, 9)
        + encode("binary_format_major_version")
        + _uint(_UINT16, 2)
        + encode("binary_format_minor_version")
        + _uint(_UINT16, 0)
        + encode("build_epoch")
        + _uint(_UINT64, int(time.time()))
        + encode("database_type")
        + encode(database_type)
        + encode("description")
        + encode({"en": "kube-audit-shipper test database"})
        + encode("ip_version")
        + _uint(_UINT16, 6)
        + encode("languages")
        + encode(["en"])
        + encode("node_count")
        + _uint(_UINT32, node_count)
        + encode("record_size")
        + _uint(_UINT16, 24)
    )
    with open(path, "wb") as handle:
        handle.write(tree + b"\x00" * 16 + bytes(data) + _METADATA_MARKER + metadata)

"""Modbus TCP server for sitewatch's integration tests (pymodbus).

Usage: python3 server.py SPEC.json PORT

SPEC.json: {"units": {"1": {"holding": {"1024": 350}, "input": {}, "coil": {"0": true},
"discrete": {}}}}. Addresses are the 0-based addresses on the wire. Only the listed
addresses exist: a read that touches any other answers exception 0x02 (illegal data
address), as a device without that register does. A unit id not listed gets no answer.
"""

import asyncio
import json
import sys

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusServerContext,
    ModbusSparseDataBlock,
)
from pymodbus.server import StartAsyncTcpServer


def block(values):
    # ModbusDeviceContext adds 1 to the wire address before looking in its blocks.
    return ModbusSparseDataBlock({int(a) + 1: v for a, v in values.items()}, mutable=False)


def main():
    spec_path, port = sys.argv[1], int(sys.argv[2])
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    devices = {}
    for unit, tables in spec["units"].items():
        devices[int(unit)] = ModbusDeviceContext(
            hr=block(tables.get("holding", {})),
            ir=block(tables.get("input", {})),
            co=block(tables.get("coil", {})),
            di=block(tables.get("discrete", {})),
        )
    context = ModbusServerContext(devices=devices, single=False)
    print(f"serving {sorted(devices)} on 127.0.0.1:{port}", flush=True)
    asyncio.run(StartAsyncTcpServer(context=context, address=("127.0.0.1", port)))


if __name__ == "__main__":
    main()

"""Sparkplug B payloads for tests/mqtt_shapes.rs, made by pysparkplug (a Sparkplug B
implementation from PyPI), so sitewatch's decoder is checked against another implementation
of sparkplug_b.proto and not only against itself.

Usage: python3 payloads.py <base timestamp in ms>
Prints one JSON object: message name -> payload bytes as hex.
"""

import json
import sys

from pysparkplug import DBirth, DData, DDeath, DataType, Metric, NBirth, NDeath

base = int(sys.argv[1])


def m(name, alias, dtype, value, ts=None):
    return Metric(timestamp=ts, name=name, alias=alias, datatype=dtype, value=value)


out = {}
out["nbirth"] = NBirth(
    timestamp=base,
    seq=0,
    metrics=(
        m("bdSeq", 0, DataType.INT64, 0),
        m("Node Control/Rebirth", 1, DataType.BOOLEAN, False),
        m("Properties/Uptime", 2, DataType.UINT32, 3600),
    ),
).encode(include_dtypes=True)
out["dbirth"] = DBirth(
    timestamp=base,
    seq=1,
    metrics=(
        m("Supply Air", 10, DataType.FLOAT, 18.5),
        m("Return Air", 11, DataType.DOUBLE, 28.25),
        m("Fan Speed", 12, DataType.UINT16, 62),
        m("Offset", 13, DataType.INT8, -3),
        m("Running", 14, DataType.BOOLEAN, True),
        m("Mode", 15, DataType.STRING, "cooling"),
    ),
).encode(include_dtypes=True)
# DDATA by alias only, without datatypes (as the spec allows after a BIRTH), with a metric
# of its own timestamp.
out["ddata"] = DData(
    timestamp=base + 10_000,
    seq=2,
    metrics=(
        Metric(timestamp=None, name=None, alias=10, datatype=DataType.FLOAT, value=19.25),
        Metric(timestamp=base + 9_500, name=None, alias=11, datatype=DataType.DOUBLE, value=27.5),
        Metric(timestamp=None, name=None, alias=13, datatype=DataType.INT8, value=-4),
    ),
).encode(include_dtypes=False)
out["ddeath"] = DDeath(timestamp=base + 20_000, seq=3).encode()
# A late DDATA of the dead device, by name: 30 °C supply air would page, but the device is
# down, so the rule is inhibited.
out["ddata_while_down"] = DData(
    timestamp=base + 25_000,
    seq=4,
    metrics=(m("Supply Air", None, DataType.FLOAT, 30.0),),
).encode(include_dtypes=True)
out["dbirth_again"] = DBirth(
    timestamp=base + 30_000,
    seq=5,
    metrics=(m("Supply Air", 10, DataType.FLOAT, 31.5),),
).encode(include_dtypes=True)
out["ndeath"] = NDeath(timestamp=None, bd_seq_metric=m("bdSeq", None, DataType.INT64, 0)).encode()

json.dump({k: v.hex() for k, v in out.items()}, sys.stdout)

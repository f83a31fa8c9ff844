"""List the named evaluation protocols (SPEC §8) with their definitions and definition hashes.

A PCK number means nothing without its protocol: ``psc6k eval --protocol NAME`` scores under one,
and every result carries the protocol's name and the SHA-256 of its definition.
"""

from __future__ import annotations

import argparse
import json
import sys

from psc6k.protocols import DEFAULT_PROTOCOL, PROTOCOLS

HELP = "list the evaluation protocols (psc6k, sketchfusion) with their definitions"
SECTION, ORDER = "score", 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    if args.json:
        json.dump({"default": DEFAULT_PROTOCOL, "protocols": [p.to_dict() for p in PROTOCOLS.values()]},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    for proto in PROTOCOLS.values():
        default = " (default)" if proto.name == DEFAULT_PROTOCOL else ""
        print(f"{proto.name}{default}: {proto.summary}")
        for key, value in proto.definition().items():
            if key != "name":
                print(f"  {key:16} {value if isinstance(value, str) else ', '.join(value)}")
        print(f"  {'sha256':16} {proto.sha256}")
        print(f"  {'source':16} {proto.source}")
        print()
    return 0

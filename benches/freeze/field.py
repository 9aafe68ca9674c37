#!/usr/bin/env python3
"""Prints fields of a loadgen.py JSON result, space-separated, for benches/freeze.sh.

    python3 field.py RESULT.json requests failed max_ms window.over_250ms nodes.gs-2 errors

A dotted name goes into objects; a missing number prints 0; an object prints as k=v,k=v (or -).
"""

import json
import sys


def get(obj, dotted):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return 0
        obj = obj[part]
    if isinstance(obj, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(obj.items())) or "-"
    if isinstance(obj, float):
        return f"{obj:.1f}"
    return obj


def main():
    with open(sys.argv[1]) as f:
        data = json.load(f)
    print(" ".join(str(get(data, name)) for name in sys.argv[2:]))


if __name__ == "__main__":
    main()

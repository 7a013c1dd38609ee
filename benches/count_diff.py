#!/usr/bin/env python3
"""Per-function instruction difference of two callgrind profiles, per unit of work.

    python3 benches/count_diff.py A/callgrind.out B/callgrind.out UNITS [--inclusive] [TOP]

Runs `callgrind_annotate` on both (exclusive costs, or inclusive with --inclusive), and
prints the functions whose cost grew most from A to B, divided by UNITS (e.g. the
difference of the request counts of the two runs), with the total first.
"""
import re
import subprocess
import sys


def costs(path, inclusive):
    args = ["callgrind_annotate", "--threshold=100", "--show-percs=no", "--auto=no"]
    if inclusive:
        args.append("--inclusive=yes")
    out = subprocess.run(args + [path], capture_output=True, text=True, check=True).stdout
    table = {}
    total = 0
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*)$", line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        name = m.group(2).strip()
        if name.startswith("=>"):
            continue
        if name.startswith("PROGRAM TOTALS"):
            total = n
            continue
        table[name] = table.get(name, 0) + n
    return total, table


def main():
    argv = [a for a in sys.argv[1:] if a != "--inclusive"]
    inclusive = "--inclusive" in sys.argv
    a, b, units = argv[0], argv[1], float(argv[2])
    top = int(argv[3]) if len(argv) > 3 else 60
    ta, ca = costs(a, inclusive)
    tb, cb = costs(b, inclusive)
    print(f"total: {(tb - ta) / units:,.0f} per unit")
    diff = {k: (cb.get(k, 0) - ca.get(k, 0)) / units for k in set(ca) | set(cb)}
    for k, v in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{v:>10,.0f}  {k[:200]}")


main()

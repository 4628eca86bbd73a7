"""Prints the closing table of a test run from the JSON lines the integration tests wrote
(one per test: scenario, events delivered, faults injected, invariant checks, result)."""

import json
import sys


def main(path: str) -> int:
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        print(f"no report at {path}: no integration test ran", file=sys.stderr)
        return 1
    rows.sort(key=lambda r: r["scenario"])
    width = max([len(r["scenario"]) for r in rows] + [8])
    header = f"{'scenario':<{width}}  {'events':>6}  {'faults':>6}  {'invariant checks':>16}  result"
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['scenario']:<{width}}  {r['events']:>6}  {r['faults']:>6}  {r['invariantChecks']:>16}  {r['result']}")
    print("-" * len(header))
    failed = sum(1 for r in rows if r["result"] != "passed")
    total = (
        sum(r["events"] for r in rows),
        sum(r["faults"] for r in rows),
        sum(r["invariantChecks"] for r in rows),
    )
    print(f"{'total: ' + str(len(rows)) + ' scenarios':<{width}}  {total[0]:>6}  {total[1]:>6}  {total[2]:>16}  "
          f"{'all passed' if failed == 0 else str(failed) + ' FAILED'}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

#!/usr/bin/env python3
"""A short account of a Schemathesis run for scripts/check-openapi.sh.

    scripts/schemathesis-summary.py REPORT.json LOG

REPORT.json is Schemathesis' JSON report, LOG its console output. Prints the operations tested,
the test cases sent, the operations that never answered 2xx (their logic was not reached), and
each failure; on failures also the part of LOG that shows them with their requests and answers.
"""

import json
import re
import sys

# Longest line of the console output repeated here (tracebacks can hold whole source files).
MAX_LINE = 400


def failure_details(log_path):
    """The ERRORS and FAILURES sections of the console output, long lines cut."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    match = re.search(r"^=+ (ERRORS|FAILURES) =+$.*?(?=^=+ (WARNINGS|SUMMARY) =+$)", text, re.M | re.S)
    if not match:
        return ""
    lines = []
    for line in match.group(0).splitlines():
        lines.append(line if len(line) <= MAX_LINE else line[:MAX_LINE] + " …")
    return "\n".join(lines)


def main():
    report_path, log_path = sys.argv[1], sys.argv[2]
    try:
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print(f"schemathesis: no report ({e}); see {log_path}")
        return 1
    ops = report["operations"]
    cases = report["test_cases"]
    print(
        f"schemathesis {report['schemathesis_version']}: {ops['tested']}/{ops['total']} operations,"
        f" {cases['generated']} test cases, seed {report['seed']},"
        f" {report['running_time']:.0f}s"
    )
    phases = ", ".join(f"{name} {phase['status']}" for name, phase in report["phases"].items())
    print(f"  phases: {phases}")
    rates = report.get("valid_rates", {})
    never = sorted(
        op
        for op, by_phase in rates.items()
        if not any(counts.get("accepted", 0) for counts in by_phase.values())
    )
    if rates:
        print(f"  answered 2xx at least once: {len(rates) - len(never)}/{len(rates)} operations")
        if never:
            print("  never 2xx (only their refusals were checked): " + "; ".join(never))
    failures = report.get("failures", [])
    errors = report.get("errors", [])
    print(f"  failures: {cases['unique_failures']} unique ({cases['with_failures']} test cases); errors: {len(errors)}")
    for failure in failures:
        print(f"    {failure['code']} {failure['title']} ×{failure['count']}: {', '.join(failure['operations'])}")
    for error in errors:
        print(f"    error: {json.dumps(error)[:MAX_LINE]}")
    if failures or errors:
        details = failure_details(log_path)
        if details:
            print(details)
    return 0


if __name__ == "__main__":
    sys.exit(main())

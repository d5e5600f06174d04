#!/usr/bin/env python3
"""Checks what promtool cannot: every alert in the rule file has a summary, a
description and a runbook_url whose anchor exists in docs/operations/runbook.md, and the
promtool tests give every alert a case where it fires and one where it stays silent.

    check_rules_meta.py RULES TESTS RUNBOOK
"""
import re
import sys

import yaml

RUNBOOK_PATH = "docs/operations/runbook.md"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation other than
    '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def main(rules_file: str, tests_file: str, runbook_file: str) -> int:
    rules = yaml.safe_load(open(rules_file))
    tests = yaml.safe_load(open(tests_file))
    anchors = {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", open(runbook_file).read(), re.M)}
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    problems = []

    for rule in alerts:
        name = rule["alert"]
        notes = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not notes.get(key):
                problems.append(f"{name}: no {key} annotation")
        url = notes.get("runbook_url", "")
        path, _, anchor = url.partition("#")
        if not path.endswith(RUNBOOK_PATH):
            problems.append(f"{name}: runbook_url {url!r} does not point into {RUNBOOK_PATH}")
        elif anchor not in anchors:
            problems.append(f"{name}: runbook_url anchor #{anchor} is not a heading of {runbook_file}")
        if "severity" not in rule.get("labels", {}):
            problems.append(f"{name}: no severity label")

    fires, silent = set(), set()
    for test in tests["tests"]:
        if not test.get("name"):
            problems.append("a test has no name")
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    for rule in alerts:
        name = rule["alert"]
        if name not in fires:
            problems.append(f"{name}: no test in which it fires")
        if name not in silent:
            problems.append(f"{name}: no test in which it stays silent")

    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    print(f"{len(alerts)} alerts: annotations, runbook anchors and firing/silent tests "
          + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

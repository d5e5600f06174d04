#!/usr/bin/env python3
"""Runs every ```sh block of a markdown guide, in order, each in its own `bash -euo pipefail`,
all in one working directory (so files written by one block are there for the next). The
directory holds a `deploy` link to the repository's deploy/ (the guide's commands run from
a checkout's root) and, standing in for the operator's own, the two files the guide asks for:
db-password and redis-password.

Blocks tagged otherwise (```console, ```yaml, ...) are shown to the reader and not run.
Prints "ok <section>: <first command>" or "FAILED ..." per block; stops at the first failure
and leaves that block's output in <workdir>/../guide.last. Output never goes to stdout, as
some blocks read secrets.

Usage: guide.py GUIDE.md WORKDIR REPO
"""
import os
import pathlib
import re
import secrets
import subprocess
import sys

FENCE = re.compile(r"^```(\S*)\s*$")


def blocks(text: str):
    section, lang, body = "", None, []
    for line in text.splitlines():
        m = FENCE.match(line)
        if lang is None:
            if line.startswith("#"):
                section = line.lstrip("#").strip()
            elif m:
                lang, body = m.group(1), []
        elif m and not m.group(1):
            yield section, lang, "\n".join(body)
            lang = None
        else:
            body.append(line)


def main() -> None:
    guide, work, repo = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    (work / "deploy").symlink_to(repo / "deploy")
    for name in ("db-password", "redis-password"):
        path = work / name
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    last = work.parent / "guide.last"
    ran = 0
    for section, lang, body in blocks(guide.read_text()):
        if lang != "sh":
            continue
        first = next((l.strip() for l in body.splitlines() if l.strip() and not l.lstrip().startswith("#")), "")
        label = f"{section}: {first[:70]}"
        with open(last, "w") as out:
            out.write(body + "\n----- output -----\n")
            out.flush()
            rc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=work, stdout=out,
                                stderr=subprocess.STDOUT, timeout=600, env=os.environ).returncode
        ran += 1
        if rc != 0:
            print(f"FAILED {label} (exit {rc})")
            sys.exit(1)
        print(f"ok {label}")
    if ran == 0:
        print(f"FAILED no ```sh block found in {guide}")
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Benchmark of bounce reading: messages parsed and classified per second on one core.

Reads every bounce of the corpus in ``tests/fixtures/bounces/`` (66 real bounces from as many
mail servers, sisimai's set-of-emails) into memory, then runs :func:`mailer.bounces.parse`
over them round after round for ``--seconds`` (default 5) in this one process, and prints
messages per second over the whole mix and per reader (standard DSN/ARF parts, or the
fallback rules for servers' own formats), with the issue's target (1,000 messages/s on one
core). Recording the findings in the database (issue 16's next step) is not measured yet:
this is the parsing half of "parsed and recorded".

    .venv/bin/python bench/bounces.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import defaultdict
from pathlib import Path

from mailer.bounces import parse

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "bounces"
TARGET = 1_000.0  # messages per second on one core (issue 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    messages = [(p.name, p.read_bytes()) for p in sorted(CORPUS.glob("*.eml"))]
    if not messages:
        raise SystemExit(f"no .eml file in {CORPUS}")
    for _, raw in messages:  # warm up: imports, regex compilation
        parse(raw)
    spent: dict[str, float] = defaultdict(float)
    counted: dict[str, int] = defaultdict(int)
    total, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        for _, raw in messages:
            t0 = time.perf_counter()
            report = parse(raw)
            how = report.reader
            spent[how] += time.perf_counter() - t0
            counted[how] += 1
            total += 1
    elapsed = time.perf_counter() - started
    rate = total / elapsed
    print(f"bounce parsing on {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, one process")  # fmt: skip
    print(f"{len(messages)} corpus messages, {total} parsed in {elapsed:.1f} s")
    print(f"all: {rate:,.0f} messages/s (target {TARGET:,.0f}/s: {rate / TARGET:.2f} of it)")
    for how in sorted(counted):
        per = counted[how] / spent[how] if spent[how] else float("inf")
        print(f"  {how}: {counted[how] // max(total // len(messages), 1)} of the corpus, "
              f"{per:,.0f} messages/s")  # fmt: skip


if __name__ == "__main__":
    main()

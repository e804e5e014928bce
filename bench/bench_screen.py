"""What the endpoint's crisis screen costs per chat request (serve/screen.py).

For each labelled test message of qtune's safety data (a fresh text each time, so the
classifier's cache never answers), time what the guard adds to a screened request: the
conversation check (patterns, then the Gemma-encoder classifier) and the answer screen on
a 256-token answer. Run on a quiet machine:

    .venv/bin/python bench/bench_screen.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from qtune.safety.detector import check_conversation, is_unsafe_answer, warm_up

from qtune.hardware import cpu_flags

MESSAGES = Path(__file__).resolve().parent.parent / "safety" / "data" / "messages.jsonl"
ANSWER = ("It sounds like exam stress is weighing on you. Try breaking revision into short "
          "sessions, keep a regular sleep routine, and talk to someone you trust. ") * 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=200, help="messages to time")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in MESSAGES.read_text().splitlines() if line.strip()]
    texts = [row["text"] for row in rows if row.get("split") == "test"][: args.limit]
    warm_up()
    conversation_ms, answer_ms = [], []
    for index, text in enumerate(texts):
        started = time.perf_counter()
        check_conversation([f"{text} ({index})"])  # unique: no cached verdict
        conversation_ms.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        is_unsafe_answer(ANSWER)
        answer_ms.append(1000 * (time.perf_counter() - started))
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "avx2", "amx")))
    print(f"machine: {platform.machine()}, {len(texts)} test messages, "
          f"CPU flags: {' '.join(flags)}")
    for name, values in (("conversation check", conversation_ms),
                         ("answer screen (256 tokens)", answer_ms)):
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        print(f"{name}: median {statistics.median(values):.1f} ms, p99 {p99:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The metric table of docs/deploy.md, generated from the catalogue (trading/metrics.py).

    .venv/bin/python deploy/metrics_table.py           # print the table
    .venv/bin/python deploy/metrics_table.py --write   # replace it in docs/deploy.md

The table sits between the two ``metrics-table`` comment lines of docs/deploy.md;
tests/unit/test_deploy_files.py checks it matches the catalogue.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "deploy.md"
START = "<!-- metrics-table:start (deploy/metrics_table.py --write) -->"
END = "<!-- metrics-table:end -->"


def table() -> str:
    sys.path.insert(0, str(ROOT))
    from trading.metrics import ALL

    lines = [
        "| on the endpoint | kind | labels | unit | process | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for m in ALL:
        name = f"`{m.exposed}`"
        if m.kind == "histogram":
            name += " (`_bucket`, `_sum`, `_count`)"
        labels = ", ".join(f"`{label}`" for label in m.labels) or "—"
        lines.append(f"| {name} | {m.kind} | {labels} | {m.unit or '—'} | {m.process} | {m.help} |")
    return "\n".join(lines) + "\n"


def replace_in(text: str, new_table: str) -> str:
    head, sep, rest = text.partition(START)
    if not sep:
        raise SystemExit(f"{DOC}: no line {START!r}")
    _, sep, tail = rest.partition(END)
    if not sep:
        raise SystemExit(f"{DOC}: no line {END!r}")
    return f"{head}{START}\n{new_table}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/deploy.md")
    args = parser.parse_args(argv)
    text = table()
    if not args.write:
        print(text, end="")
        return 0
    DOC.write_text(replace_in(DOC.read_text(encoding="utf-8"), text), encoding="utf-8")
    print(f"updated the metric table of {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

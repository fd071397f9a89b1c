"""Before/after tables of saved flash-sale runs (``bench.flash_sale --json``), as Markdown.

    .venv/bin/python -m bench.compare --before 'var/cmp/n-before-*.json' --after 'var/cmp/n-after-*.json'

Prints, per shape, min / median / max of each variant and the ratio of the medians (rate, p99, the client's
ceiling and CPU per decision; release: lateness), then the median CPU ms per decision per process.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
from collections.abc import Callable
from typing import Any

SHAPES = ("rush c=50", "holds c=16", "holds c=64", "mix c=64", "release n=1000")
PROCESSES = ("gateway", "inventory", "payment", "search", "mailer", "rabbitmq", "postgres", "redis", "stack total")
Row = tuple[str, Callable[[dict[str, Any]], float], str]


def load(pattern: str) -> dict[str, list[dict[str, Any]]]:
    by_shape: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            for result in json.load(f)["results"]:
                by_shape.setdefault(result["label"], []).append(result)
    return by_shape


def spread(values: list[float], fmt: str) -> str:
    ordered = sorted(values)
    return " / ".join(fmt.format(v) for v in (ordered[0], statistics.median(ordered), ordered[-1]))


def cpu(key: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: r["cpu_ms_per_decision"][key]  # type: ignore[no-any-return]


def rows_for(shape: str, figure: str) -> list[Row]:
    if shape.startswith("release"):
        first: list[Row] = [
            ("lateness p99 ms", lambda r: r["extra"]["late_p99_ms"], "{:,.0f}"),
            ("lateness max ms", lambda r: r["extra"]["late_max_ms"], "{:,.0f}"),
        ]
    else:
        first = [(figure, lambda r: r["rate"], "{:,.0f}"), ("p99 ms", lambda r: r["p99_ms"], "{:,.0f}")]
    return [
        *first,
        ("client ceiling /s", lambda r: r["ceiling_rps"], "{:,.0f}"),
        ("CPU ms per decision, stack total", cpu("stack total"), "{:.2f}"),
        ("client CPU ms per request", cpu("client"), "{:.2f}"),
        ("others' CPU ms per decision (not ours)", cpu("others (not ours)"), "{:.2f}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="glob of the before runs' JSON")
    parser.add_argument("--after", required=True, help="glob of the after runs' JSON")
    args = parser.parse_args()
    before, after = load(args.before), load(args.after)
    shapes = [s for s in SHAPES if s in before and s in after]
    print("| shape | figure | before: min / median / max | after: min / median / max | after / before (medians) |")
    print("|---|---|---|---|---|")
    for shape in shapes:
        for name, get, fmt in rows_for(shape, before[shape][0]["figure"]):
            b, a = [get(r) for r in before[shape]], [get(r) for r in after[shape]]
            ratio = f"{statistics.median(a) / statistics.median(b):.2f}x" if statistics.median(b) else ""
            print(f"| {shape} | {name} | {spread(b, fmt)} | {spread(a, fmt)} | {ratio} |")
    print()
    print("| shape | variant | " + " | ".join(PROCESSES) + " |")
    print("|---|---|" + "---|" * len(PROCESSES))
    for shape in shapes:
        for variant, runs in (("before", before), ("after", after)):
            cells = [f"{statistics.median(r['cpu_ms_per_decision'][p] for r in runs[shape]):.2f}" for p in PROCESSES]
            print(f"| {shape} | {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

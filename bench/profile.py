"""Where the CPU of a decision goes: py-spy on every service process during a flash-sale shape.

Runs the shapes of ``bench/flash_sale.py`` (one round by default) with ``py-spy record`` attached to each service
process for exactly the shape's measurement window (``--nonblocking``: the processes are not paused; idle
threads are left out, so a sample is a moment the process was running or ready to run). Raw collapsed stacks
are saved under ``var/profiles/<shape>-<service>.txt`` (gitignored; ``flamegraph.pl`` or speedscope read them).

Printed per process: the top functions by self time and by total (inclusive) time, and self time by package,
each as a share of the process's samples and as CPU milliseconds per decision (the share times the process's
CPU per decision measured from /proc in the same window).

    .venv/bin/python -m bench.profile [--shapes rush,holds] [--rate 100] [--top 12] [--json var/profile.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import flash_sale
from bench.flash_sale import Bench, ShapeResult

console = Console(width=200)
PROFILE_DIR = Path("var/profiles")
PYTHON_SERVICES = ("gateway", "inventory", "payment", "mailer", "search", "ops", "paysim")


def py_spy() -> str:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else "py-spy"


@dataclass
class Profile:
    service: str
    samples: int = 0
    self_counts: Counter[str] = field(default_factory=Counter)
    total_counts: Counter[str] = field(default_factory=Counter)
    package_counts: Counter[str] = field(default_factory=Counter)
    centres: Counter[str] = field(default_factory=Counter)


def frame_function(frame: str) -> str:
    """``'execute (sqlalchemy/engine/base.py)'`` -> the same, trimmed of a line number if any."""
    frame = frame.strip()
    if frame.endswith(")") and "(" in frame:
        name, _, where = frame.rpartition(" (")
        where = where[:-1]
        file, _, line = where.rpartition(":")
        if line.isdigit():
            where = file
        return f"{name} ({where})"
    return frame


def frame_package(frame: str) -> str:
    """The package a frame's code belongs to: ``sqlalchemy``, ``asyncio``, ``services/inventory``, ..."""
    _, _, where = frame.rpartition(" (")
    where = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    parts = [p for p in where.split("/") if p]
    if not parts:
        return "?"
    if parts[0] in ("services", "shared") and len(parts) > 2:
        return f"{parts[0]}/{parts[1]}"
    if parts[0].endswith(".py"):
        return parts[0].removesuffix(".py")  # a top-level module (stdlib or site-packages)
    return parts[0]


# Cost centres: a sample goes to the first package met walking from the leaf towards the root, skipping
# the standard library's plumbing (asyncio, threading, contextlib...), so that e.g. a socket write made by
# aiormq counts as AMQP. A stack with nothing but plumbing is the event loop itself (uvloop's C code and the
# system calls it makes run "inside" Runner.run as far as py-spy sees without --native).
CENTRES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SQL client (SQLAlchemy, asyncpg)", ("sqlalchemy", "asyncpg", "greenlet")),
    ("AMQP client (aio-pika, aiormq, pamqp)", ("aio_pika", "aiormq", "pamqp")),
    ("FastStream / fast_depends dispatch", ("faststream", "fast_depends")),
    ("pydantic (validate / dump)", ("pydantic", "pydantic_core")),
    ("HTTP server (uvicorn, httptools)", ("uvicorn", "httptools", "h11")),
    ("FastAPI / Starlette", ("fastapi", "starlette")),
    ("Redis client", ("redis",)),
    ("JWT / crypto", ("jwt", "cryptography", "hmac", "hashlib")),
    ("logging (structlog)", ("structlog", "logging")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("JSON (json, orjson)", ("json", "orjson")),
    ("our code (services, shared)", ("services", "shared")),
)
PLUMBING = (
    "asyncio",
    "threading",
    "contextlib",
    "runpy",
    "<frozen runpy>",
    "_weakrefset",
    "<string>",
    "functools",
    "typing",
    "abc",
    "enum",
    "queue",
    "anyio",
    "selectors",
    "concurrent",
)
THREAD_HOP = ("run_in_threadpool", "WorkerThread.run", "run_sync_in_worker_thread")


def cost_centre(frames: list[str]) -> str:
    if any(hop in f for f in frames for hop in THREAD_HOP):
        return "thread hop (anyio worker thread per call)"
    leaf = frames[-1]
    if leaf.startswith(("Runner.run (", "run_until_complete (", "run (uvloop")) or frame_package(leaf) == "uvloop":
        return "event loop (uvloop C code, syscalls)"
    for f in reversed(frames):
        package = frame_package(f).split("/")[0]
        if package in PLUMBING or package.startswith("<"):
            continue
        for centre, packages in CENTRES:
            if package in packages:
                return centre
        return f"other: {package}"
    return "event loop (uvloop C code, syscalls)"


def parse_raw(service: str, path: Path) -> Profile:
    prof = Profile(service)
    if not path.exists():
        return prof
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_function(f) for f in stack.split(";") if f]
        if frames and frames[0].startswith(("process ", "thread ")):
            frames = frames[1:]
        if not frames:
            continue
        prof.samples += n
        prof.self_counts[frames[-1]] += n
        prof.package_counts[frame_package(frames[-1])] += n
        for f in set(frames):
            prof.total_counts[f] += n
        prof.centres[cost_centre(frames)] += n
    return prof


class Spy:
    """One py-spy per service process, started and stopped around each measurement window."""

    def __init__(self, bench: Bench, rate: int, native: bool) -> None:
        self.bench = bench
        self.rate = rate
        self.native = native
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.files: dict[str, dict[str, Path]] = {}

    async def begin(self, label: str) -> None:
        assert self.bench.stack is not None
        safe = label.replace(" ", "-").replace("=", "")
        self.files[label] = {}
        for name, proc in self.bench.stack.supervisor.procs.items():
            if name not in PYTHON_SERVICES:
                continue
            out = PROFILE_DIR / f"{safe}-{name}.txt"
            cmd = [
                "record",
                "--pid",
                str(proc.pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
                "--nolineno",
            ]
            if self.native:
                cmd.append("--native")
            self.procs[name] = await asyncio.create_subprocess_exec(
                py_spy(), *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            self.files[label][name] = out
        await asyncio.sleep(0.3)  # attached before the first request

    async def end(self, label: str) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for name, proc in self.procs.items():
            try:
                _, err = await asyncio.wait_for(proc.communicate(), 30)
            except TimeoutError:
                proc.kill()
                _, err = await proc.communicate()
            text = err.decode(errors="replace")
            if proc.returncode not in (0, -signal.SIGINT) and "Error" in text:
                console.print(f"[yellow]py-spy on {name}: {text.strip()[-300:]}[/yellow]")
        self.procs.clear()


def report(label: str, result: ShapeResult, profiles: dict[str, Profile], top: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "label": label,
        "decisions": result.decisions,
        "rate": result.rate,
        "extra": result.extra,
        "cpu_ms_per_decision": result.cpu_ms_per_decision,
        "processes": {},
    }
    console.rule(
        f"[bold]{label}[/bold]: {result.rate:.0f} {result.figure}, "
        f"{result.cpu_ms_per_decision['stack total']:.1f} CPU ms per decision in total"
    )
    for name, prof in profiles.items():
        if prof.samples == 0:
            continue
        ms = result.cpu_ms_per_decision.get(name, 0.0)
        t = Table(title=f"{label} · {name}: {ms:.2f} CPU ms per decision, {prof.samples} samples")
        for col in ("self %", "self ms/dec", "function (self)", "total %", "total ms/dec", "function (total)"):
            t.add_column(col, justify="right" if "%" in col or "ms" in col else "left")
        selfs = prof.self_counts.most_common(top)
        totals = [
            kv
            for kv in prof.total_counts.most_common(top + 12)
            if not kv[0].startswith(("<module>", "run (", "run_until_complete", "_run_once", "_run ("))
        ][:top]
        for i in range(max(len(selfs), len(totals))):
            s = selfs[i] if i < len(selfs) else ("", 0)
            tt = totals[i] if i < len(totals) else ("", 0)
            t.add_row(
                f"{100 * s[1] / prof.samples:.1f}" if s[0] else "",
                f"{ms * s[1] / prof.samples:.3f}" if s[0] else "",
                s[0][:80],
                f"{100 * tt[1] / prof.samples:.1f}" if tt[0] else "",
                f"{ms * tt[1] / prof.samples:.3f}" if tt[0] else "",
                tt[0][:80],
            )
        console.print(t)
        packages = ", ".join(f"{p} {100 * n / prof.samples:.0f}%" for p, n in prof.package_counts.most_common(10))
        console.print(f"  self time by package: {packages}")
        out["processes"][name] = {
            "samples": prof.samples,
            "cpu_ms_per_decision": ms,
            "self": prof.self_counts.most_common(40),
            "total": prof.total_counts.most_common(60),
            "packages": prof.package_counts.most_common(30),
        }
    return out


def print_centres(label: str, result: ShapeResult, profiles: dict[str, Profile]) -> dict[str, dict[str, float]]:
    """CPU ms per decision per cost centre (rows) and process (columns)."""
    live = {n: p for n, p in profiles.items() if p.samples and result.cpu_ms_per_decision.get(n, 0.0) >= 0.05}
    table: dict[str, dict[str, float]] = {}
    for name, prof in live.items():
        ms = result.cpu_ms_per_decision.get(name, 0.0)
        for centre, n in prof.centres.items():
            table.setdefault(centre, {})[name] = ms * n / prof.samples
    t = Table(title=f"{label}: CPU ms per decision by cost centre (process CPU from /proc x py-spy sample share)")
    t.add_column("cost centre")
    for name in live:
        t.add_column(name, justify="right")
    t.add_column("sum", justify="right")
    for centre, row in sorted(table.items(), key=lambda kv: -sum(kv[1].values())):
        t.add_row(centre, *(f"{row.get(n, 0.0):.3f}" for n in live), f"{sum(row.values()):.3f}")
    t.add_row(
        "process total",
        *(f"{result.cpu_ms_per_decision.get(n, 0.0):.3f}" for n in live),
        f"{sum(result.cpu_ms_per_decision.get(n, 0.0) for n in live):.3f}",
    )
    console.print(t)
    return table


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    bench = Bench(args)
    spy = Spy(bench, args.rate, args.native)
    bench.window_hooks.append((spy.begin, spy.end))
    reports: list[dict[str, Any]] = []
    async with bench.running():
        await bench.warm_up()
        for rnd in range(1, args.rounds + 1):
            for shape in args.shape_list:
                for r in await bench.run_shape(shape, rnd):
                    profiles = {name: parse_raw(name, path) for name, path in spy.files.get(r.label, {}).items()}
                    reports.append(report(r.label, r, profiles, args.top))
                    reports[-1]["cost_centres_ms"] = print_centres(r.label, r, profiles)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--native", action="store_true", help="py-spy --native (C extension frames; slower)")
    parser.add_argument("--profile-json", metavar="PATH")
    own, rest = parser.parse_known_args()
    if not any(a.startswith("--shapes") for a in rest):
        rest = ["--shapes", "rush,holds", *rest]
    if not any(a.startswith("--rounds") for a in rest):
        rest = ["--rounds", "1", *rest]
    args = flash_sale.parse_args(rest)
    for k, v in vars(own).items():
        setattr(args, k, v)
    os.makedirs(PROFILE_DIR, exist_ok=True)
    reports = asyncio.run(run(args))
    if args.profile_json:
        Path(args.profile_json).write_text(json.dumps(reports, indent=2, default=str))
        console.print(f"profiles written to {args.profile_json}")


if __name__ == "__main__":
    main()

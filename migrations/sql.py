"""Run a plain-SQL migration script statement by statement (asyncpg prepares one statement at a time)."""

from __future__ import annotations

import re

from alembic import op

_SPLIT = re.compile(r";\s*\n")


def run_script(sql: str) -> None:
    for statement in _SPLIT.split(sql):
        if statement.strip() and not all(
            line.strip().startswith("--") or not line.strip() for line in statement.splitlines()
        ):
            op.execute(statement)

""".env.example documents every setting, with the real default (so it stays true as settings are added)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from shared.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
LINE = re.compile(r"^#?(TICKETING_[A-Z0-9_]+)=(.*)$")


def documented() -> dict[str, str]:
    return {m[1]: m[2] for line in ENV_EXAMPLE.read_text().splitlines() if (m := LINE.match(line))}


def test_every_setting_is_listed_and_nothing_else() -> None:
    fields = {f"TICKETING_{name.upper()}" for name in Settings.model_fields}
    listed = documented()
    assert fields - set(listed) == set(), "add these to .env.example"
    assert set(listed) - fields == set(), "these are not settings (any more)"


def test_every_setting_has_a_one_line_description_above_it() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if LINE.match(line):
            above = lines[i - 1]
            assert above.startswith("#") and (LINE.match(above) or len(above) > 3), f"no description: {line}"


def test_the_documented_values_are_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TICKETING_"):
            monkeypatch.delenv(key)
    env_file = tmp_path / ".env"
    # Uncommented as a user would; an empty value of an optional setting means "unset", so it stays out.
    env_file.write_text("\n".join(f"{k}={v}" for k, v in documented().items() if v or k != "TICKETING_PAYSIM_ENABLED"))

    assert Settings(_env_file=env_file) == Settings(_env_file=None)  # type: ignore[call-arg]

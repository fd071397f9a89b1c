"""The environment decides which safety checks apply, so it must be one of three known values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.settings import PUBLISHED_SECRETS, Environment, Settings, get_settings


@pytest.fixture(autouse=True)
def no_ticketing_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes counts: the suite's own services run with TICKETING_* set in this process."""
    for name in [n for n in os.environ if n.startswith("TICKETING_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(Path(__file__).parent)  # and no developer's .env


REAL = {
    "jwt_secret": "j" * 40,
    "vnpay_hash_secret": "v" * 40,
    "vnpay_pay_url": "https://pay.vnpay.vn/vpcpay.html",
    "vnpay_api_url": "https://api.vnpay.vn/t",
    "vnpay_return_url": "https://shop.example/return",
    "smtp_host": "smtp.example",
}


@pytest.mark.parametrize("spelling", ["production", "Production", " PRODUCTION "])
def test_production_is_recognised_whatever_its_case(spelling: str) -> None:
    assert Settings(environment=spelling, **REAL).environment is Environment.PRODUCTION  # type: ignore[arg-type]
    # ...and its guards apply: the repository's JWT secret is refused.
    with pytest.raises(ValueError, match="JWT_SECRET"):
        Settings(environment=spelling, **{**REAL, "jwt_secret": "dev-only-change-me-0123456789abcdef"})  # type: ignore[arg-type]


@pytest.mark.parametrize("unknown", ["prod", "staging", "", "dev"])
def test_an_unknown_environment_is_refused(unknown: str) -> None:
    with pytest.raises(ValueError, match="not one of development, test, production"):
        Settings(environment=unknown, **REAL)  # type: ignore[arg-type]


@pytest.mark.parametrize("secret", [*sorted(PUBLISHED_SECRETS), "short-but-not-published"])
@pytest.mark.parametrize("name", ["jwt_secret", "vnpay_hash_secret"])
def test_published_or_short_secrets_are_refused_outside_development_and_test(name: str, secret: str) -> None:
    with pytest.raises(ValueError, match=name.upper()):
        Settings(environment="production", **{**REAL, name: secret})  # type: ignore[arg-type]
    # Development and test keep working with the published secrets, so a fresh clone runs.
    assert Settings(environment="test", **{name: secret}).environment is Environment.TEST  # type: ignore[arg-type]


def test_only_development_and_test_run_the_payment_simulator() -> None:
    assert Settings(environment="development").paysim_active  # type: ignore[call-arg]
    assert Settings(environment="test", paysim_enabled=None).paysim_active  # type: ignore[call-arg]
    assert not Settings(environment="development", paysim_enabled=False).paysim_active  # type: ignore[call-arg]
    assert not Settings(environment="production", **REAL).paysim_active  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="simulator"):
        Settings(environment="production", paysim_enabled=True, **REAL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fault injection"):
        Settings(environment="production", fault_exit_before_publish=True, **REAL)  # type: ignore[arg-type]


def test_a_process_with_a_bad_environment_stops_with_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETING_ENVIRONMENT", "staging")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as stopped:
            get_settings()
    finally:
        get_settings.cache_clear()
    message = str(stopped.value)
    assert message.startswith("ticketing: invalid settings: environment:")
    assert "'staging'" in message and "\n" not in message

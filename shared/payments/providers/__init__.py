"""Payment providers behind one interface (base.PaymentProvider); the configured one comes from settings."""

from __future__ import annotations

from shared.payments.providers.base import PaymentProvider
from shared.payments.providers.vnpay import VnpayProvider
from shared.settings import Settings


def from_settings(settings: Settings) -> PaymentProvider:
    return VnpayProvider(
        settings.vnpay_tmn_code,
        settings.vnpay_hash_secret.get_secret_value(),
        settings.vnpay_pay_endpoint,
        settings.vnpay_api_endpoint,
        settings.vnpay_return_endpoint,
        locale=settings.vnpay_locale,
        order_type=settings.vnpay_order_type,
        server_ip=settings.vnpay_server_ip,
        timeout=settings.vnpay_timeout_seconds,
    )

"""Mailer service: ticket, expiry and refund email with retries, dead-lettering and exactly-one delivery."""

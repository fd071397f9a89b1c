"""ticketing/ports.py: a server's port is drawn where no outgoing connection can take it first."""

from __future__ import annotations

import itertools
import socket

import pytest

from ticketing import ports


def test_ports_are_below_the_ephemeral_range_free_and_never_handed_out_twice() -> None:
    drawn = [ports.free_port() for _ in range(50)]
    assert len(set(drawn)) == len(drawn)
    assert all(ports.LOWEST <= p < ports.ephemeral_start() for p in drawn)
    with socket.socket() as s:
        s.bind(("127.0.0.1", drawn[0]))  # nothing holds it


def test_a_port_something_listens_on_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        choices = itertools.chain([busy, busy], itertools.count(ports.LOWEST))
        monkeypatch.setattr(ports.random, "randrange", lambda low, high: next(choices))
        assert ports.free_port() != busy

"""The doctor's warnings about the broker's file-descriptor budget (pure logic)."""

from __future__ import annotations

from ticketing.doctor import BrokerFigures, broker_warnings


def test_the_1024_limit_that_wedged_the_broker_is_warned_about_before_any_queue_exists() -> None:
    warnings = broker_warnings(BrokerFigures(fd_soft_limit=1024, fds_open=40, queues=0, quorum_queues=0))
    assert len(warnings) == 1 and "1024" in warnings[0] and "65536" in warnings[0]


def test_half_the_quorum_queue_budget_is_warned_about_long_before_the_wedge_at_about_300() -> None:
    assert not any("quorum" in w for w in broker_warnings(BrokerFigures(fd_soft_limit=1024, quorum_queues=100)))
    warned = [w for w in broker_warnings(BrokerFigures(fd_soft_limit=1024, quorum_queues=160)) if "quorum" in w]
    assert warned and "160 quorum queues" in warned[0]


def test_a_well_set_node_with_many_queues_has_nothing_to_say() -> None:
    assert broker_warnings(BrokerFigures(fd_soft_limit=65536, fds_open=900, queues=800, quorum_queues=800)) == []


def test_descriptors_in_use_are_warned_about_at_half_the_limit() -> None:
    assert any("40000 of 65536" in w for w in broker_warnings(BrokerFigures(fd_soft_limit=65536, fds_open=40000)))


def test_a_broker_elsewhere_is_named_as_unknown_not_as_fine() -> None:
    assert "unknown" in broker_warnings(BrokerFigures())[0]

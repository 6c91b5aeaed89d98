"""The embedded folder broker: whole messages, one consumer each, oldest first."""

from __future__ import annotations

from pathlib import Path

from kombu import Connection


def connection(folder: Path) -> Connection:
    return Connection(
        transport="workers.broker:Transport",
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
        },
    )


def test_two_consumers_share_a_backlog_without_reading_a_message_twice(tmp_path):
    (tmp_path / "control").mkdir()
    with connection(tmp_path) as conn:
        queue = conn.SimpleQueue("shared")
        for i in range(50):
            queue.put({"n": i})
    seen: list[int] = []
    with connection(tmp_path) as first, connection(tmp_path) as second:
        a, b = first.SimpleQueue("shared"), second.SimpleQueue("shared")
        # Both list the folder, then take turns: each name is claimed by one of them only.
        for _ in range(25):
            for consumer in (a, b):
                message = consumer.get(timeout=1)
                seen.append(message.payload["n"])
                message.ack()
    assert sorted(seen) == list(range(50))
    assert seen == list(range(50))  # oldest first, turn by turn


def test_messages_published_after_a_listing_are_found(tmp_path):
    (tmp_path / "control").mkdir()
    with connection(tmp_path) as conn:
        queue = conn.SimpleQueue("later")  # (kombu keeps declared queues per process)
        queue.put({"n": 1})
        assert queue.get(timeout=1).payload == {"n": 1}
        queue.put({"n": 2})
        queue.put({"n": 3})
        assert [queue.get(timeout=1).payload["n"] for _ in range(2)] == [2, 3]

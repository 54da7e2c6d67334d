"""Keys filed by event time and handed back once a time has passed them."""

from __future__ import annotations

from stream.state.expiry import ExpiryQueue


def test_a_bucket_is_handed_back_only_once_wholly_before_the_time() -> None:
    queue: ExpiryQueue[str] = ExpiryQueue(100)
    queue.add("a", 50)
    queue.add("b", 99)
    queue.add("c", 100)
    queue.add("a", 250)

    assert queue.pop_before(99) == []
    assert sorted(queue.pop_before(100)) == ["a", "b"]
    assert queue.pop_before(200) == ["c"]
    assert len(queue) == 1


def test_a_queue_round_trips_through_plain_structures() -> None:
    queue: ExpiryQueue[tuple[str, int]] = ExpiryQueue(10)
    queue.add(("q", 1), 35)
    queue.add(("q", 2), 5)

    copy = ExpiryQueue.restore(queue.export())

    assert copy.pop_before(10) == [("q", 2)]
    assert copy.pop_before(40) == [("q", 1)]

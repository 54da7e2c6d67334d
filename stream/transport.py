"""The worker's Faust app class: the aiokafka transport, without a task per record.

Faust's consumer hands each fetched record to the streams through
`Service.wait_first(deliver(record), suspend_flow.wait())`, so that a
rebalance can interrupt a delivery stuck on a full stream buffer. That call
wraps both awaitables and the consumer's stopped and crashed events in four
new tasks and waits on them, for every record: with the stream machinery
around it, several times the cost of reading and decoding the record.

The consumer below skips that while the flow runs. It reaches into Faust's
internals (the private `App._new_transport` and the fetcher's use of
`wait_first`), checked against faust-streaming 0.15.3, the pinned version.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT
from mode.services import WaitResults


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, delivering records inline while flow runs."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """Await a delivery directly unless flow is suspended.

        Only the fetcher calls this with two coroutines (a delivery and the
        wait for `suspend_flow`). While flow is not suspended, the delivery
        is awaited in place; its buffer has room almost always, so it returns
        without yielding. A rebalance that begins while a delivery waits for
        room then waits for that delivery: the record lands in a stream
        buffer that Faust empties when the rebalance stops the flow, as it
        does with every record buffered before.
        """
        flow_stopped = self.suspend_flow.is_set()
        if (
            timeout is None
            and len(coros) == 2
            and all(asyncio.iscoroutine(coro) for coro in coros)
            and not flow_stopped
        ):
            delivery, suspended = coros
            suspended.close()
            result = await delivery
            return WaitResults([delivery], [result], False)
        return await super().wait_first(*coros, timeout=timeout)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the consumer above."""

    Consumer = Consumer


class App(faust.App):
    """A Faust app on the transport above, for every broker URL."""

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)

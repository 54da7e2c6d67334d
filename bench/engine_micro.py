"""Micro-benchmark of the KPI engine: admit() per event and values() per call.

Builds a realistic stream (a CRM of 60,000 customers, 40,000 leads, tickets,
email campaigns and marketing batches over 35 days, slightly out of order),
validates it up front, then times `KpiEngine.admit` alone and `values()`
called once per 1,000 events, as a worker calling it once a second would.
The prebuilt events are frozen out of the garbage collector's sight, so the
pauses measured are those the engine's own objects cause. `--memory` traces
allocations instead (slower) and reports bytes per tracked entity.

    PYTHONPATH=. python bench/engine_micro.py [--events 400000] [--memory]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.events import EVENT_ADAPTER, Event
from stream.catalogue import CHANNELS, COMPLAINT_CATEGORIES, LOST_REASONS
from stream.kpis import KpiEngine
from stream.settings import Settings

START = datetime(2024, 3, 1, tzinfo=UTC)

# Relative frequency of each event type, roughly a B2C shop with a CRM.
MIX: dict[str, int] = {
    "site.visit": 14,
    "ad.impression": 6,
    "ad.click": 6,
    "email.sent": 9,
    "email.delivered": 9,
    "email.opened": 5,
    "email.clicked": 2,
    "email.unsubscribed": 1,
    "email.bounced": 1,
    "order.placed": 12,
    "customer.churned": 1,
    "lead.created": 5,
    "lead.contacted": 6,
    "lead.converted": 2,
    "lead.disqualified": 1,
    "quote.issued": 2,
    "deal.won": 2,
    "deal.lost": 1,
    "quota.set": 1,
    "spend.recorded": 1,
    "newsletter.subscribed": 2,
    "ticket.opened": 3,
    "ticket.replied": 4,
    "ticket.reopened": 1,
    "ticket.resolved": 3,
    "complaint.filed": 1,
}


def build(count: int, days: float, seed: int) -> list[Event]:
    """Return `count` validated events spread over `days`, a few out of order."""
    rng = random.Random(seed)
    kinds = list(MIX)
    weights = list(MIX.values())
    span = days * 86_400
    events: list[Event] = []
    for number in range(count):
        offset = span * number / count
        if rng.random() < 0.05:
            offset -= rng.uniform(0, 6 * 3600)
        moment = START + timedelta(seconds=max(offset, 0))
        kind = rng.choices(kinds, weights)[0]
        events.append(EVENT_ADAPTER.validate_python(_body(rng, number, kind, moment)))
    return events


def _body(
    rng: random.Random, number: int, kind: str, moment: datetime
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"evt-{number}",
        "type": kind,
        "occurred_at": moment.isoformat(),
        "schema_version": 1,
    }
    customer = f"cust-{rng.randrange(60_000)}"
    lead = f"lead-{rng.randrange(40_000)}"
    ticket = f"tick-{number // 40 + rng.randrange(-50, 50)}"
    message = f"msg-{number // 3 + rng.randrange(-200, 200)}"
    rep = f"rep-{rng.randrange(40)}"
    channel = rng.choice(CHANNELS)
    money = f"{rng.randrange(100, 500_000) / 100:.2f}"
    if kind == "site.visit":
        body |= {"visitor_id": "v", "channel": channel, "count": rng.randrange(1, 30)}
    elif kind.startswith("ad."):
        body |= {"campaign_id": "c", "channel": channel, "count": rng.randrange(1, 500)}
    elif kind.startswith("email."):
        body |= {"message_id": message, "contact_id": "k"}
        if kind == "email.bounced":
            body["bounce_type"] = "soft"
    elif kind == "order.placed":
        body |= {
            "order_id": f"o{number}",
            "customer_id": customer,
            "revenue": money,
            "cost": f"{rng.randrange(0, 100_000) / 100:.2f}",
            "currency": "EUR",
            "crm_attributed": rng.random() < 0.3,
        }
    elif kind == "customer.churned":
        body |= {"customer_id": customer}
    elif kind == "lead.created":
        body |= {"lead_id": lead, "channel": channel}
    elif kind == "lead.contacted":
        body |= {"lead_id": lead, "rep_id": rep, "activity": "call"}
    elif kind == "lead.converted":
        body |= {"lead_id": lead, "customer_id": customer, "channel": channel}
    elif kind == "lead.disqualified":
        body |= {"lead_id": lead}
    elif kind == "quote.issued":
        body |= {
            "quote_id": f"q{number // 5}",
            "version": rng.randrange(1, 4),
            "rep_id": rep,
            "amount": money,
            "currency": "EUR",
        }
    elif kind == "deal.won":
        body |= {
            "deal_id": f"d{number}",
            "customer_id": customer,
            "rep_id": rep,
            "amount": money,
            "currency": "EUR",
            "lead_id": lead,
        }
    elif kind == "deal.lost":
        body |= {
            "deal_id": f"d{number}",
            "rep_id": rep,
            "reason": rng.choice(LOST_REASONS),
            "amount": money,
            "currency": "EUR",
            "lead_id": lead,
        }
    elif kind == "quota.set":
        body |= {
            "rep_id": rep,
            "period": f"{moment.year:04d}-{moment.month:02d}",
            "amount": "20000",
            "currency": "EUR",
        }
    elif kind == "spend.recorded":
        body |= {
            "category": rng.choice(["crm", "acquisition"]),
            "amount": money,
            "currency": "EUR",
        }
    elif kind == "newsletter.subscribed":
        body |= {"contact_id": "k"}
    elif kind == "ticket.opened":
        body |= {"ticket_id": ticket, "customer_id": customer, "channel": channel}
    elif kind == "ticket.replied":
        body |= {"ticket_id": ticket, "agent_id": "a"}
    elif kind in ("ticket.reopened", "ticket.resolved"):
        body |= {"ticket_id": ticket}
    elif kind == "complaint.filed":
        body |= {
            "complaint_id": f"x{number}",
            "customer_id": customer,
            "category": rng.choice(COMPLAINT_CATEGORIES),
        }
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--days", type=float, default=35.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timezone", default="Europe/Paris")
    parser.add_argument("--memory", action="store_true", help="trace allocations")
    options = parser.parse_args()

    started = time.perf_counter()
    events = build(options.events, options.days, options.seed)
    print(f"built {len(events)} events in {time.perf_counter() - started:.1f} s")
    gc.collect()
    gc.freeze()

    if options.memory:
        measure_memory(events, options.timezone)
        return

    engine = KpiEngine(Settings(timezone=options.timezone))
    admit = engine.admit
    per_call = 1_000
    admit_seconds = 0.0
    values_ms: list[float] = []
    for first in range(0, len(events), per_call):
        batch = events[first : first + per_call]
        started = time.perf_counter()
        for event in batch:
            admit(event)
        admit_seconds += time.perf_counter() - started

        started = time.perf_counter()
        engine.values()
        values_ms.append((time.perf_counter() - started) * 1000)

    steady = values_ms[len(values_ms) // 2 :]
    print(f"admit(): {admit_seconds / len(events) * 1e6:.1f} us/event")
    print(
        f"values(): median {statistics.median(steady):.1f} ms,"
        f" p99 {statistics.quantiles(steady, n=100)[98]:.1f} ms,"
        f" max {max(steady):.1f} ms over the second half of the run"
    )
    print(f"tracked entities at the end: {engine.tracked_entities}")
    print(f"checkpoint size: {len(engine.dump()) / 1e6:.1f} MB")


def measure_memory(events: list[Event], timezone: str) -> None:
    """Print the engine's traced memory and its share per tracked entity."""
    tracemalloc.start()
    engine = KpiEngine(Settings(timezone=timezone))
    for event in events:
        engine.admit(event)
    engine.values()
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    entities = engine.tracked_entities
    print(f"engine memory: {current / 1e6:.1f} MB (peak {peak / 1e6:.1f} MB)")
    print(f"tracked entities: {entities}, {current / entities:.0f} bytes each")


if __name__ == "__main__":
    main()

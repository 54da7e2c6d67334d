"""Random CRM event streams: out of order, with duplicates and late events.

Ids are drawn from small pools so that customers churn and rejoin, tickets
collect several replies and resolutions, and leads are created, contacted and
closed in any order. The events of one message or one quote version fall on
one day, as they do in practice (see the shortcomings noted in
`stream.state.messages` and `stream.state.quotes`).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.events import EVENT_ADAPTER, Event
from stream.catalogue import CHANNELS, COMPLAINT_CATEGORIES, LOST_REASONS

START = datetime(2024, 2, 10, tzinfo=UTC)


def random_stream(seed: int, count: int, days: float) -> list[Event]:
    """Return `count` events over `days` days, in a shuffled arrival order.

    About 8 % arrive up to 3 h late, 2 % up to 5 days late, 1 % 29-33 days
    late (some of those are too late to apply) and 3 % are repeated.
    """
    rng = random.Random(seed)
    span = days * 86_400
    stamps = sorted(rng.uniform(0, span) for _ in range(count))
    raw: list[dict[str, Any]] = []
    for number, offset in enumerate(stamps):
        roll = rng.random()
        if roll < 0.08:
            offset -= rng.uniform(0, 3 * 3600)
        elif roll < 0.1:
            offset -= rng.uniform(0, 5 * 86_400)
        elif roll < 0.11:
            offset -= rng.uniform(29 * 86_400, 33 * 86_400)
        moment = START + timedelta(seconds=offset, microseconds=rng.randrange(1000))
        raw.append(_body(rng, number, moment))

    events: list[Event] = []
    for body in raw:
        events.append(EVENT_ADAPTER.validate_python(body))
        if rng.random() < 0.03 and events:
            events.append(rng.choice(events[-20:]))
    return events


def _money(rng: random.Random) -> str:
    return f"{rng.randrange(0, 100000) / 100:.2f}"


def _body(rng: random.Random, number: int, moment: datetime) -> dict[str, Any]:
    day = int((moment - START).total_seconds() // 86_400)
    base = {
        "event_id": f"e{number}",
        "occurred_at": moment.isoformat(),
        "schema_version": 1,
    }
    kind = rng.choice(
        [
            "lead.created",
            "lead.contacted",
            "lead.converted",
            "lead.disqualified",
            "quote.issued",
            "deal.won",
            "deal.lost",
            "quota.set",
            "order.placed",
            "order.placed",
            "customer.churned",
            "customer.churned",
            "site.visit",
            "ad.impression",
            "ad.click",
            "newsletter.subscribed",
            "spend.recorded",
            "email.sent",
            "email.delivered",
            "email.delivered",
            "email.opened",
            "email.clicked",
            "email.unsubscribed",
            "email.bounced",
            "ticket.opened",
            "ticket.replied",
            "ticket.replied",
            "ticket.reopened",
            "ticket.resolved",
            "ticket.resolved",
            "complaint.filed",
        ]
    )
    base["type"] = kind
    lead = f"L{rng.randrange(40)}"
    customer = f"C{rng.randrange(25)}"
    rep = f"R{rng.randrange(4)}"
    channel = rng.choice(CHANNELS)
    if kind == "lead.created":
        base |= {"lead_id": lead, "channel": channel}
    elif kind == "lead.contacted":
        base |= {"lead_id": lead, "rep_id": rep, "activity": "call"}
    elif kind == "lead.converted":
        base |= {"lead_id": lead, "customer_id": customer, "channel": channel}
    elif kind == "lead.disqualified":
        base |= {"lead_id": lead}
    elif kind == "quote.issued":
        base |= {
            "quote_id": f"Q{day}-{rng.randrange(5)}",
            "version": rng.randrange(1, 3),
            "rep_id": rep,
            "amount": _money(rng),
            "currency": "EUR",
        }
    elif kind == "deal.won":
        base |= {
            "deal_id": f"D{number}",
            "customer_id": customer,
            "rep_id": rep,
            "amount": _money(rng),
            "currency": "EUR",
        }
        if rng.random() < 0.7:
            base["lead_id"] = lead
        if rng.random() < 0.4:
            base["lead_created_at"] = (
                moment - timedelta(seconds=rng.uniform(0, 20 * 86_400))
            ).isoformat()
    elif kind == "deal.lost":
        base |= {
            "deal_id": f"D{number}",
            "rep_id": rep,
            "reason": rng.choice(LOST_REASONS),
        }
        if rng.random() < 0.6:
            base |= {"amount": _money(rng), "currency": "EUR"}
        if rng.random() < 0.5:
            base["lead_id"] = lead
    elif kind == "quota.set":
        month = moment.month + rng.choice([-1, 0, 0, 1])
        year = moment.year + (month - 1) // 12
        month = (month - 1) % 12 + 1
        amount = _money(rng) if rng.random() < 0.9 else "-5"
        base |= {
            "rep_id": rep,
            "period": f"{year:04d}-{month:02d}",
            "amount": amount,
            "currency": "EUR",
        }
    elif kind == "order.placed":
        base |= {
            "order_id": f"O{number}",
            "customer_id": customer,
            "revenue": _money(rng),
            "cost": _money(rng),
            "currency": "EUR",
            "crm_attributed": rng.random() < 0.5,
        }
    elif kind == "customer.churned":
        base |= {"customer_id": customer}
    elif kind in ("site.visit",):
        base |= {"visitor_id": "v", "channel": channel, "count": rng.randrange(1, 50)}
    elif kind in ("ad.impression", "ad.click"):
        base |= {"campaign_id": "c", "channel": channel, "count": rng.randrange(1, 50)}
    elif kind == "newsletter.subscribed":
        base |= {"contact_id": "k"}
    elif kind == "spend.recorded":
        base |= {
            "category": rng.choice(["crm", "acquisition"]),
            "amount": _money(rng),
            "currency": "EUR",
        }
    elif kind.startswith("email."):
        base |= {"message_id": f"M{day}-{rng.randrange(8)}", "contact_id": "k"}
        if kind == "email.bounced":
            base["bounce_type"] = "hard"
    elif kind == "ticket.opened":
        base |= {
            "ticket_id": f"T{rng.randrange(15)}",
            "customer_id": customer,
            "channel": channel,
        }
    elif kind == "ticket.replied":
        base |= {"ticket_id": f"T{rng.randrange(15)}", "agent_id": "a"}
    elif kind in ("ticket.reopened", "ticket.resolved"):
        base |= {"ticket_id": f"T{rng.randrange(15)}"}
    elif kind == "complaint.filed":
        base |= {
            "complaint_id": "x",
            "customer_id": customer,
            "category": rng.choice(COMPLAINT_CATEGORIES),
        }
    return base

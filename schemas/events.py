"""CRM event models: the envelope and every event type, as one tagged union."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

CHANNELS = (
    "organic",
    "paid_search",
    "paid_social",
    "social",
    "email",
    "referral",
    "direct",
    "events",
    "partner",
    "other",
)
LOST_REASONS = (
    "price",
    "competitor",
    "timing",
    "no_budget",
    "no_decision",
    "product_fit",
    "communication",
    "quality",
    "other",
)
COMPLAINT_CATEGORIES = ("product", "service", "billing", "delivery", "other")

MAX_MONEY = Decimal("1e15")
"""No single amount of a CRM event comes near this; larger is a broken source."""

MAX_COUNT = 1_000_000_000
"""Upper bound of a pre-aggregated `count`."""

_PERIOD = re.compile(r"^(20\d\d|2100)-(0[1-9]|1[0-2])$")
_RFC3339_START = re.compile(r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")


def _closed(vocabulary: tuple[str, ...]) -> Any:
    """Build a validator mapping a value outside `vocabulary` to `other`."""

    def to_vocabulary(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        folded = value.strip().lower()
        return folded if folded in vocabulary else "other"

    return BeforeValidator(to_vocabulary)


def _rfc3339(value: Any) -> Any:
    # Pydantic would also read a number, or a string of digits, as Unix time;
    # the contract asks for an RFC 3339 date and time, so anything that does
    # not start like one is refused before parsing.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339_START.match(value):
        raise ValueError(
            "expected an RFC 3339 timestamp string with an offset,"
            " like 2024-05-01T10:00:00Z"
        )
    return value


Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
# Pydantic's JSON parser reads a JSON number with a fraction or exponent as a
# double, so `validate_json` keeps at most 15 significant digits of it;
# stream.ingest reads records holding longer numbers again, exactly.
Money = Annotated[
    Decimal, Field(allow_inf_nan=False, ge=0, lt=MAX_MONEY, max_digits=40)
]
SignedMoney = Annotated[
    Decimal, Field(allow_inf_nan=False, gt=-MAX_MONEY, lt=MAX_MONEY, max_digits=40)
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]

Channel = Annotated[
    Literal[
        "organic",
        "paid_search",
        "paid_social",
        "social",
        "email",
        "referral",
        "direct",
        "events",
        "partner",
        "other",
    ],
    _closed(CHANNELS),
]
LostReason = Annotated[
    Literal[
        "price",
        "competitor",
        "timing",
        "no_budget",
        "no_decision",
        "product_fit",
        "communication",
        "quality",
        "other",
    ],
    _closed(LOST_REASONS),
]
ComplaintCategory = Annotated[
    Literal["product", "service", "billing", "delivery", "other"],
    _closed(COMPLAINT_CATEGORIES),
]


def _check_period(value: Any) -> Any:
    if isinstance(value, str) and not _PERIOD.match(value):
        raise ValueError("expected a month as YYYY-MM")
    return value


Period = Annotated[str, BeforeValidator(_check_period)]


class Envelope(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=False)

    event_id: Id
    occurred_at: Timestamp
    schema_version: Literal[1]
    source: Annotated[str, StringConstraints(max_length=64)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        # The contract reads a JSON null as an absent field: drop them so
        # defaults apply and required fields report as missing.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class LeadCreated(Envelope):
    """A new lead entered the funnel."""

    type: Literal["lead.created"]
    lead_id: Id
    channel: Channel
    rep_id: Id | None = None


class LeadContacted(Envelope):
    """A rep reached out to a lead."""

    type: Literal["lead.contacted"]
    lead_id: Id
    rep_id: Id
    activity: Literal["call", "meeting", "email"]


class LeadConverted(Envelope):
    """A lead became a customer."""

    type: Literal["lead.converted"]
    lead_id: Id
    customer_id: Id
    channel: Channel


class LeadDisqualified(Envelope):
    """A lead was dropped from the funnel."""

    type: Literal["lead.disqualified"]
    lead_id: Id
    reason: Annotated[str, StringConstraints(max_length=256)] | None = None


class QuoteIssued(Envelope):
    """A quote, or a new version of one, was sent."""

    type: Literal["quote.issued"]
    quote_id: Id
    version: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    rep_id: Id
    amount: Money
    currency: Currency
    lead_id: Id | None = None
    customer_id: Id | None = None


class DealWon(Envelope):
    """A deal closed as won."""

    type: Literal["deal.won"]
    deal_id: Id
    customer_id: Id
    rep_id: Id
    amount: Money
    currency: Currency
    lead_id: Id | None = None
    lead_created_at: Timestamp | None = None


class DealLost(Envelope):
    """A deal closed as lost."""

    type: Literal["deal.lost"]
    deal_id: Id
    rep_id: Id
    reason: LostReason
    amount: Money | None = None
    currency: Currency | None = Field(None, validate_default=True)
    lead_id: Id | None = None

    # Published JSON Schema: an amount that is not null needs a currency.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "properties": {"amount": {"not": {"type": "null"}}},
                "required": ["amount"],
            },
            "then": {
                "properties": {"currency": {"type": "string"}},
                "required": ["currency"],
            },
        }
    )

    @field_validator("currency")
    @classmethod
    def _amount_has_currency(cls, value: str | None, info: ValidationInfo) -> Any:
        # Checked on the field rather than on the model so that the error
        # names `currency` and reads as a missing field, like any other.
        if value is None and info.data.get("amount") is not None:
            raise PydanticCustomError("missing", "Field required when amount is given")
        return value


class QuotaSet(Envelope):
    """A rep's sales quota for a month."""

    type: Literal["quota.set"]
    rep_id: Id
    period: Period
    amount: SignedMoney
    currency: Currency


class OrderPlaced(Envelope):
    """A customer placed an order."""

    type: Literal["order.placed"]
    order_id: Id
    customer_id: Id
    revenue: Money
    cost: Money
    currency: Currency
    crm_attributed: bool = False


class CustomerChurned(Envelope):
    """A customer left."""

    type: Literal["customer.churned"]
    customer_id: Id
    reason: Annotated[str, StringConstraints(max_length=256)] | None = None


class SiteVisit(Envelope):
    """Visits to the web site, possibly pre-aggregated."""

    type: Literal["site.visit"]
    visitor_id: Id
    channel: Channel
    count: Count = 1


class AdImpression(Envelope):
    """Ad impressions, usually a batch."""

    type: Literal["ad.impression"]
    campaign_id: Id
    channel: Channel
    count: Count = 1


class AdClick(Envelope):
    """Ad clicks, possibly a batch."""

    type: Literal["ad.click"]
    campaign_id: Id
    channel: Channel
    count: Count = 1


class NewsletterSubscribed(Envelope):
    """A contact signed up for the newsletter."""

    type: Literal["newsletter.subscribed"]
    contact_id: Id
    channel: Channel | None = None


class SpendRecorded(Envelope):
    """Money spent on acquisition or on the CRM."""

    type: Literal["spend.recorded"]
    category: Literal["acquisition", "crm"]
    amount: Money
    currency: Currency
    channel: Channel | None = None


class _EmailEvent(Envelope):
    message_id: Id
    contact_id: Id
    campaign_id: Id | None = None


class EmailSent(_EmailEvent):
    """An email left the sending platform."""

    type: Literal["email.sent"]


class EmailDelivered(_EmailEvent):
    """An email reached the recipient's server."""

    type: Literal["email.delivered"]


class EmailOpened(_EmailEvent):
    """A recipient opened an email."""

    type: Literal["email.opened"]


class EmailClicked(_EmailEvent):
    """A recipient clicked a link in an email."""

    type: Literal["email.clicked"]


class EmailUnsubscribed(_EmailEvent):
    """A recipient unsubscribed from an email."""

    type: Literal["email.unsubscribed"]


class EmailBounced(_EmailEvent):
    """An email bounced."""

    type: Literal["email.bounced"]
    bounce_type: Literal["hard", "soft"]


class TicketOpened(Envelope):
    """A support ticket was opened."""

    type: Literal["ticket.opened"]
    ticket_id: Id
    customer_id: Id
    channel: Channel


class TicketReplied(Envelope):
    """An agent replied publicly on a ticket."""

    type: Literal["ticket.replied"]
    ticket_id: Id
    agent_id: Id


class TicketReopened(Envelope):
    """A resolved ticket was reopened."""

    type: Literal["ticket.reopened"]
    ticket_id: Id


class TicketResolved(Envelope):
    """A ticket was resolved."""

    type: Literal["ticket.resolved"]
    ticket_id: Id


class ComplaintFiled(Envelope):
    """A customer filed a complaint."""

    type: Literal["complaint.filed"]
    complaint_id: Id
    customer_id: Id
    category: ComplaintCategory


EVENT_MODELS: tuple[type[Envelope], ...] = (
    LeadCreated,
    LeadContacted,
    LeadConverted,
    LeadDisqualified,
    QuoteIssued,
    DealWon,
    DealLost,
    QuotaSet,
    OrderPlaced,
    CustomerChurned,
    SiteVisit,
    AdImpression,
    AdClick,
    NewsletterSubscribed,
    SpendRecorded,
    EmailSent,
    EmailDelivered,
    EmailOpened,
    EmailClicked,
    EmailUnsubscribed,
    EmailBounced,
    TicketOpened,
    TicketReplied,
    TicketReopened,
    TicketResolved,
    ComplaintFiled,
)

Event: TypeAlias = Annotated[
    LeadCreated
    | LeadContacted
    | LeadConverted
    | LeadDisqualified
    | QuoteIssued
    | DealWon
    | DealLost
    | QuotaSet
    | OrderPlaced
    | CustomerChurned
    | SiteVisit
    | AdImpression
    | AdClick
    | NewsletterSubscribed
    | SpendRecorded
    | EmailSent
    | EmailDelivered
    | EmailOpened
    | EmailClicked
    | EmailUnsubscribed
    | EmailBounced
    | TicketOpened
    | TicketReplied
    | TicketReopened
    | TicketResolved
    | ComplaintFiled,
    Field(discriminator="type"),
]
"""Any CRM event; the `type` field selects the model."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_TYPES: tuple[str, ...] = tuple(
    model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for model in EVENT_MODELS
)

MONEY_FIELDS: dict[str, tuple[str, ...]] = {
    "quote.issued": ("amount",),
    "deal.won": ("amount",),
    "deal.lost": ("amount",),
    "quota.set": ("amount",),
    "order.placed": ("revenue", "cost"),
    "spend.recorded": ("amount",),
}
"""Money fields per event type; all of an event's money shares its `currency`."""

"""A self-contained example: record a support-ticket triage pipeline, change it, replay it.

``bitfab demo`` runs :func:`run`. The pipeline is importable, so after the demo you can also
replay it yourself::

    bitfab replay bitfab.demo:triage --db /tmp/bitfab-demo-xxxx/bitfab.db

Nothing here calls a network: the "LLM" is a deterministic stand-in that answers like an
OpenAI-shaped response (``model`` and ``usage``), marked ``mock_on_replay`` so replays serve
its recorded answer instead of calling it again.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, TextIO

import bitfab

__all__ = [
    "TICKETS",
    "Priority",
    "Ticket",
    "TriageResult",
    "classify",
    "lookup_customer",
    "run",
    "set_version",
    "triage",
]

MODEL = "fake-gpt-mini"


class Priority(Enum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


@dataclass
class Ticket:
    id: int
    customer_id: str
    subject: str
    body: str
    opened_at: datetime


@dataclass
class TriageResult:
    priority: Priority
    queue: str
    tags: list[str] = field(default_factory=list)


# -- the code under change -------------------------------------------------------------------

_CODE = {"version": 1}


def set_version(version: int) -> None:
    """Switch the pipeline between version 1 (as recorded) and version 2 (the change)."""
    _CODE["version"] = version


_CUSTOMERS: dict[str, dict[str, Any]] = {
    "acme": {"name": "Acme Corp", "plan": "enterprise", "open_invoices": 0},
    "globex": {"name": "Globex", "plan": "pro", "open_invoices": 2},
    "initech": {"name": "Initech", "plan": "free", "open_invoices": 0},
    "umbrella": {"name": "Umbrella", "plan": "enterprise", "open_invoices": 1},
    "hooli": {"name": "Hooli", "plan": "pro", "open_invoices": 0},
}


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


@bitfab.trace(key="classify", span_type="llm", mock_on_replay=True)
def classify(prompt: str, *, model: str = MODEL) -> dict[str, Any]:
    """Stands in for a paid LLM call: deterministic, a few milliseconds, with token usage."""
    time.sleep(0.002 + (_stable(prompt) % 4) / 1000)
    text = prompt.lower()
    if any(word in text for word in ("down", "outage", "502", "data loss")):
        label = "incident"
    elif any(word in text for word in ("invoice", "refund", "charged", "vat")):
        label = "billing"
    elif any(word in text for word in ("password", "login", "2fa", "sso")):
        label = "account"
    else:
        label = "question"
    return {
        "model": model,
        "label": label,
        "confidence": round(0.6 + (_stable(prompt) % 40) / 100, 2),
        "usage": {"prompt_tokens": 18 + len(prompt.split()) * 2, "completion_tokens": 6},
    }


@bitfab.trace(key="lookup_customer", span_type="custom")
def lookup_customer(customer_id: str) -> dict[str, Any]:
    """A tool step: reads the CRM (a dict here). Version 1 fails on an unknown customer."""
    time.sleep(0.001)
    if _CODE["version"] >= 2:
        return _CUSTOMERS.get(
            customer_id, {"name": customer_id, "plan": "free", "open_invoices": 0}
        )
    return _CUSTOMERS[customer_id]


@bitfab.trace(key="triage")
def triage(ticket: Ticket) -> TriageResult:
    """Route a support ticket: ask the model for a label, look the customer up, pick a queue."""
    verdict = classify(f"Classify this support ticket.\n{ticket.subject}\n{ticket.body}")
    customer = lookup_customer(ticket.customer_id)
    label = str(verdict["label"])
    queue = {"incident": "oncall", "billing": "billing", "account": "support"}.get(label, "support")
    priority = Priority.HIGH if label == "incident" else Priority.NORMAL
    if label == "question":
        priority = Priority.LOW
    tags = [label, str(customer["plan"])]
    if _CODE["version"] >= 2:
        # version 2: enterprise customers never wait in the low-priority queue, and billing
        # tickets of customers with open invoices are raised
        if customer["plan"] == "enterprise" and priority is Priority.LOW:
            priority = Priority.NORMAL
        if label == "billing" and customer["open_invoices"]:
            priority = Priority.HIGH
            tags.append("open-invoices")
    return TriageResult(priority=priority, queue=queue, tags=tags)


_SUBJECTS = [
    ("Site down", "Checkout returns 502 since 9am"),
    ("Invoice copy", "Please resend October's invoice"),
    ("Refund", "Charged twice for order 1182"),
    ("Password reset", "The reset mail never arrives"),
    ("VAT number", "Our VAT number changed, please update the invoice"),
    ("Export to CSV", "How do I export last month's reports?"),
    ("SSO setup", "Login with our SSO provider fails with an error"),
    ("API limits", "What are the rate limits of the API?"),
    ("Outage?", "Dashboard has been down for 10 minutes"),
]
_CUSTOMER_IDS = ["acme", "globex", "initech", "umbrella", "hooli", "acme", "globex"]
_START = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)


def _tickets() -> list[Ticket]:
    tickets = []
    for n in range(36):
        subject, body = _SUBJECTS[n % len(_SUBJECTS)]
        customer = _CUSTOMER_IDS[n % len(_CUSTOMER_IDS)]
        if n in (13, 29):
            customer = "wayne-enterprises"  # not in the CRM: version 1 fails on these
        tickets.append(
            Ticket(
                id=1000 + n,
                customer_id=customer,
                subject=subject,
                body=body,
                opened_at=_START + timedelta(minutes=37 * n),
            )
        )
    return tickets


TICKETS = _tickets()


def run(directory: str | None = None, *, out: TextIO | None = None) -> str:
    """Record, change, replay and print the test run; returns the store's path.

    ``directory`` defaults to a fresh temporary directory. The default bitfab instance is
    configured to record into ``DIRECTORY/bitfab.db`` (never a server).
    """
    import tempfile

    stream = out or sys.stdout
    if directory is None:
        directory = tempfile.mkdtemp(prefix="bitfab-demo-")
    os.makedirs(directory, exist_ok=True)
    db = os.path.join(directory, "bitfab.db")

    def say(text: str = "") -> None:
        print(text, file=stream, flush=True)

    bitfab.configure(db=db, url=None, enabled=True)
    set_version(1)
    say(f"bitfab demo: a support-ticket triage pipeline, recorded into {db}")
    say()
    say(f"1. version 1 handles {len(TICKETS)} tickets (each call of triage() is recorded,")
    say("   with its nested LLM call classify() and tool call lookup_customer())")
    failed = 0
    for ticket in TICKETS:
        try:
            triage(ticket)
        except KeyError:
            failed += 1
    bitfab.flush()
    say(f"   {len(TICKETS) - failed} routed, {failed} failed (a customer missing from the CRM)")
    say()
    say("2. the code changes (version 2): enterprise customers are never low priority,")
    say("   billing tickets with open invoices are raised, unknown customers no longer fail")
    set_version(2)
    say()
    say("3. replaying the recorded calls through version 2 (the LLM answer is served from the")
    say("   recording, the tool step runs for real)")
    say()
    try:
        result = triage.replay(limit=len(TICKETS))
    finally:
        set_version(1)
    say(str(result))
    bitfab.flush()
    say()
    say("Look at it:")
    say(f"  bitfab runs --db {db}")
    if result.test_run_id:
        say(f"  bitfab run {result.test_run_id} --db {db}")
    say(f"  bitfab traces triage --db {db}")
    changed = next((i for i in result.items if i.verdict == "changed"), None)
    trace_id = changed.original_trace_id if changed else result.items[0].original_trace_id
    say(f"  bitfab show {trace_id} --db {db}")
    say(f"  bitfab replay bitfab.demo:triage --db {db}")
    say()
    say("Open it in the browser (the web UI):")
    say(f"  bitfab serve --db {db} --no-auth")
    if result.test_run_id:
        say(f"  then http://127.0.0.1:8000/runs/{result.test_run_id}")
    else:
        say("  then http://127.0.0.1:8000/")
    return db

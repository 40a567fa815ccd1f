"""Record calls of a small ticket-triage pipeline, change the code, replay, see what changed.

Run: python examples/quickstart.py   (records into .bitfab/bitfab.db under the current directory)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum

import bitfab
from bitfab.store import open_store


class Priority(Enum):
    LOW = "low"
    HIGH = "high"


@dataclass
class Ticket:
    id: int
    subject: str
    body: str
    opened_at: datetime


@bitfab.trace(key="classify", span_type="llm", mock_on_replay=True)
def classify(text: str) -> dict[str, object]:
    """Stands in for a paid LLM call: replays serve its recorded answer instead of calling it."""
    urgent = any(word in text.lower() for word in ("down", "outage", "twice"))
    return {
        "model": "fake-llm-1",
        "label": "urgent" if urgent else "normal",
        "usage": {"input_tokens": len(text.split()) * 4, "output_tokens": 3},
    }


RULES = {"version": 1}


@bitfab.trace(key="triage")
def triage(ticket: Ticket, *, lang: str = "en") -> tuple[Priority, str]:
    verdict = classify(f"{ticket.subject}\n{ticket.body}")
    priority = Priority.HIGH if verdict["label"] == "urgent" else Priority.LOW
    if RULES["version"] >= 2 and "invoice" in ticket.subject.lower():
        priority = Priority.HIGH  # v2: billing questions jump the queue
    return priority, f"[{lang}] {ticket.subject}"


TICKETS = [
    Ticket(
        1,
        "Site down",
        "Checkout returns 502 since 9am",
        datetime(2026, 11, 2, 9, 5, tzinfo=timezone.utc),
    ),
    Ticket(2, "Invoice copy", "Please resend October's invoice", datetime(2026, 11, 2, 10, 0)),
    Ticket(
        3,
        "Refund",
        "Charged twice for order 1182",
        datetime(2026, 11, 3, 8, 30, tzinfo=timezone.utc),
    ),
    Ticket(4, "Password reset", "The reset mail never arrives", datetime(2026, 11, 3, 9, 0)),
    Ticket(5, "Invoice address", "Our VAT number changed", datetime(2026, 11, 4, 14, 12)),
]


def main() -> None:
    print("1. recording 5 calls of triage() (version 1)")
    for ticket in TICKETS:
        triage(ticket, lang="en")
    bitfab.flush()

    db = bitfab.default_instance().config.db_path()
    store = open_store(db)
    newest = store.newest_roots("triage", 1)[0]
    data = newest["rawSpan"]["span_data"]
    print(f"   stored in {db}; the newest one:")
    print("   input      ", json.dumps(data["input"]))
    print("   input_meta ", json.dumps(data["input_meta"]))
    print("   output     ", json.dumps(data["output"]), json.dumps(data["output_meta"]))
    store.close()

    print(
        "\n2. changing the code (version 2: invoices are high priority), replaying the recorded calls"
    )
    RULES["version"] = 2
    result = triage.replay(limit=5)
    print()
    print(result)
    print(
        f"\nfunctions: {[info.key for info in bitfab.functions()]}; export stats: {bitfab.stats()}"
    )


if __name__ == "__main__":
    main()

"""Record a few calls into the embedded store and print what was recorded.

Run: python examples/quickstart.py   (writes .bitfab/bitfab.db under the current directory)
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum

import bitfab


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
    """A stand-in for an LLM call: deterministic, and it reports model and tokens."""
    urgent = any(word in text.lower() for word in ("down", "outage", "refund"))
    return {
        "model": "fake-llm-1",
        "label": "urgent" if urgent else "normal",
        "usage": {"input_tokens": len(text.split()), "output_tokens": 3},
    }


@bitfab.trace(key="triage")
def triage(ticket: Ticket, *, lang: str = "en") -> tuple[Priority, str]:
    verdict = classify(f"{ticket.subject}\n{ticket.body}")
    priority = Priority.HIGH if verdict["label"] == "urgent" else Priority.LOW
    return priority, f"[{lang}] {ticket.subject}"


def main() -> None:
    tickets = [
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
    ]
    for ticket in tickets:
        triage(ticket, lang="en")
    bitfab.flush()

    db = bitfab.default_instance().config.db_path()
    print(f"recorded into {db}\n")
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT record FROM spans WHERE key = 'triage' AND is_root = 1 ORDER BY start_us DESC LIMIT 3"
        ).fetchall()
    for (text,) in rows:
        record = json.loads(text)
        data = record["rawSpan"]["span_data"]
        print(f"trace {record['traceId']}  {data['name']}")
        print("  input :", json.dumps(data["input"]))
        print("  meta  :", json.dumps(data.get("input_meta")))
        print("  output:", json.dumps(data["output"]))
    print(f"\nfunctions: {[info.key for info in bitfab.functions()]}")
    print(f"stats: {bitfab.stats()}")


if __name__ == "__main__":
    main()

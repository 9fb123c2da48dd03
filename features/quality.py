"""What the feature builder met on its way: dirty data handled, counted and reported.

Dirty data is not fatal. Unknown categories fall into "other", missing values into
"unknown" or an empty value, duplicate events count once, events of unknown leads are
dropped; each of these is counted here so that a data engineer sees it, and so that a sudden
rise can fail a validation gate elsewhere.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: How many distinct unknown values to keep per field (the report stays small).
TOP_UNKNOWN = 20


@dataclass
class DataQualityReport:
    """Counts of what was read, skipped and repaired while building features as of a time."""

    as_of: str = ""
    leads_read: int = 0
    leads_known: int = 0  # created before as_of
    leads_without_status: int = 0  # known at as_of but no status change recorded before it
    events_read: int = 0
    events_after_as_of: int = 0  # ignored: not known yet
    events_of_future_leads: int = 0  # lead exists but was created at/after as_of
    events_unknown_lead: int = 0
    events_duplicate: int = 0
    events_unknown_channel: int = 0
    events_unknown_action: int = 0
    events_used: int = 0
    status_rows_unknown_lead: int = 0
    missing: Counter[str] = field(default_factory=Counter)  # field -> rows
    unknown: dict[str, Counter[str]] = field(default_factory=dict)  # field -> raw value -> rows
    normalised: Counter[str] = field(default_factory=Counter)  # field -> rows whose raw value was repaired
    invalid: Counter[str] = field(default_factory=Counter)  # field -> rows with impossible values

    def add_unknown(self, field_name: str, values: Counter[str]) -> None:
        """Record raw values of ``field_name`` that match no known category."""
        self.unknown.setdefault(field_name, Counter()).update(values)

    def merge(self, other: DataQualityReport) -> None:
        """Add ``other``'s counts into this report (for reports built in pieces)."""
        for name in self.__dataclass_fields__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, int):
                setattr(self, name, mine + theirs)
            elif isinstance(mine, Counter):
                mine.update(theirs)
            elif isinstance(mine, dict):
                for key, counts in theirs.items():
                    mine.setdefault(key, Counter()).update(counts)

    @property
    def dirty_events(self) -> int:
        return self.events_unknown_lead + self.events_duplicate + self.events_unknown_channel

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; unknown values are cut to the most frequent few per field."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "unknown":
                value = {k: dict(v.most_common(TOP_UNKNOWN)) for k, v in sorted(value.items())}
            elif isinstance(value, Counter):
                value = dict(sorted(value.items()))
            out[name] = value
        return out

    as_dict = to_dict

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def summary(self) -> str:
        """One line for logs: the counts that say whether the input was healthy."""
        return (
            f"as_of={self.as_of} leads {self.leads_known}/{self.leads_read} known; events used "
            f"{self.events_used}/{self.events_read} (future {self.events_after_as_of}, "
            f"unknown lead {self.events_unknown_lead}, duplicate {self.events_duplicate}, "
            f"unknown channel {self.events_unknown_channel}); missing {dict(self.missing)}; "
            f"unknown categories {sum(sum(c.values()) for c in self.unknown.values())}"
        )

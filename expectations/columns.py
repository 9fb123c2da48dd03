"""Which columns of the feature table the ``features`` suite checks, and how.

The feature table is built by :mod:`features.build` from the one list in :mod:`features.spec`.
The suite file holds only the generic checks plus per-group templates; the groups come from
:func:`feature_columns`, so when the spec grows (or a check needs tightening) this function is
the single place to change, and the suite follows without editing JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FeatureColumns:
    """Column groups of the feature table, each checked by the suite template of that name."""

    key: tuple[str, ...] = ("lead_id", "as_of")
    #: Event/lead counts: never empty, never negative.
    counts: tuple[str, ...] = ()
    #: Any float feature: finite when present.
    floats: tuple[str, ...] = ()
    #: Float features the spec never leaves empty (its description has no "empty when").
    required_floats: tuple[str, ...] = ()
    #: Categorical features and their allowed values.
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def required(self) -> tuple[str, ...]:
        """Every column the table must have."""
        return self.key + self.counts + self.floats + tuple(self.categories)


def feature_columns() -> FeatureColumns:
    """Column groups derived from :data:`features.spec.FEATURES` (imported lazily)."""
    from features.spec import FEATURES, KEY_COLUMNS

    counts = tuple(f.name for f in FEATURES if f.dtype.startswith("int"))
    floats = tuple(f.name for f in FEATURES if f.dtype.startswith("float"))
    required_floats = tuple(
        f.name for f in FEATURES if f.dtype.startswith("float") and "empty" not in f.description.lower()
    )
    categories = {f.name: tuple(f.categories or ()) for f in FEATURES if f.dtype == "category"}
    return FeatureColumns(tuple(KEY_COLUMNS), counts, floats, required_floats, categories)

"""Bad-sample bookkeeping: nothing is dropped silently.

Every sample left out while a dataset is set up is recorded here by kind (missing, corrupt, truncated, too_small,
unsupported, empty_caption, no_caption) with a few example names. With ``on_bad_sample="raise"`` the whole list is
checked first and one :class:`BadSampleError` reports all problems at once with the fix; with ``"skip"`` the counts
are printed at setup and kept on the DataModule (``dm.report``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from msdm.errors import UserError

POLICIES = ("raise", "skip")

FIXES = {
    "missing": "the file named in the captions table does not exist: fix the path or the image column",
    "corrupt": "the file is not a readable image: re-export or re-download it",
    "truncated": "the file is cut short: copy or download it again",
    "too_small": "the image is smaller than min_image_size: use a larger image or lower min_image_size",
    "unsupported": "convert the image to 8/16-bit PNG or JPEG",
    "empty_caption": "a caption cell is empty: fill it or delete the row",
    "no_caption": "the image has no caption at all: add one or remove the image",
}


class BadSampleError(UserError, ValueError):
    """Raised at setup with ``on_bad_sample="raise"`` when samples are bad; lists every kind, examples and fixes."""


def check_policy(on_bad_sample: str) -> str:
    if on_bad_sample not in POLICIES:
        raise ValueError(f"on_bad_sample must be one of {POLICIES}, got {on_bad_sample!r}")
    return on_bad_sample


@dataclass
class SkipReport:
    """Counts of left-out samples by kind, with up to ``max_examples`` ``(name, detail)`` per kind."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    max_examples: int = 5

    def add(self, kind: str, name: str, detail: str = "") -> None:
        self.counts[kind] += 1
        ex = self.examples.setdefault(kind, [])
        if len(ex) < self.max_examples:
            ex.append((str(name), detail))

    def merge(self, other: SkipReport) -> None:
        for kind, n in other.counts.items():
            self.counts[kind] += n
            ex = self.examples.setdefault(kind, [])
            ex.extend(other.examples.get(kind, [])[: max(0, self.max_examples - len(ex))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def summary(self, what: str = "samples") -> str:
        if not self:
            return f"no bad {what}"
        lines = [f"{self.total} bad {what}: " + ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items()))]
        for kind in sorted(self.counts):
            for name, detail in self.examples.get(kind, []):
                lines.append(f"  {kind}: {name}" + (f" ({detail})" if detail else ""))
            if kind in FIXES:
                lines.append(f"    fix: {FIXES[kind]}")
        return "\n".join(lines)

    def raise_or_report(self, on_bad_sample: str, what: str = "samples", where: str = "") -> None:
        """Raise :class:`BadSampleError` under ``"raise"`` if anything was recorded; otherwise do nothing."""
        if self and on_bad_sample == "raise":
            raise BadSampleError(
                f"{where + ': ' if where else ''}{self.summary(what)}\n"
                f"Fix the files above, or pass on_bad_sample='skip' to leave them out (they are counted and reported)."
            )

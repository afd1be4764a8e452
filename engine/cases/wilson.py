"""The 95% confidence interval of a proportion (the blast fraction of a count), Wilson's score
interval: what a hematologist's manual differential is quoted with. Plain math, no statistics
package; `wilson_interval(10, 50)` is (0.1124, 0.3304) to four places.

For k cells of n counted, p = k / n and z the normal quantile (1.96 for 95%):

    centre = (p + z^2 / 2n) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

It never leaves [0, 1] and stays honest at 0 of n or n of n (where the plain p ± z·se collapses).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal distribution
MIN_COUNT = 100  # fewer cells counted: the report and the panel warn (a 100-cell differential is the floor)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of k successes in n trials; None when n is 0 (nothing counted)."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"{k} of {n}: a count cannot exceed the cells counted")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the ends (no rounding to 0.99999...)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Fraction:
    """k of n cells, with its 95% Wilson interval (`low`, `high` are None when n is 0)."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.k, self.n)

    @property
    def low(self) -> float | None:
        ci = self.interval
        return ci[0] if ci else None

    @property
    def high(self) -> float | None:
        ci = self.interval
        return ci[1] if ci else None

    @property
    def too_few(self) -> bool:
        """Fewer cells than a differential needs (MIN_COUNT)."""
        return self.n < MIN_COUNT

    def short(self) -> str:
        """'20.0% (11.2–33.0%), n=50' for a table."""
        if not self.n:
            return "– (n=0)"
        lo, hi = self.interval
        return f"{self.k / self.n:.1%} ({lo:.1%}–{hi:.1%}), n={self.n}"

    def text(self) -> str:
        """'20.0% (95% CI 11.2–33.0%; 10 of 50 cells)'; '–' when nothing was counted."""
        if not self.n:
            return "– (no cells counted)"
        lo, hi = self.interval
        return f"{self.k / self.n:.1%} (95% CI {lo:.1%}–{hi:.1%}; {self.k} of {self.n} cells)"


__all__ = ["Fraction", "MIN_COUNT", "Z95", "wilson_interval"]

"""The τ rule that says how many core neurons S_a a target keeps (paper Alg. 1, App. D.6).

Plain Python, no torch: the command line parses and checks --tau before it loads the method.
τ can be a count (`16`), a fraction of the lower layer's width (`0.05` or `5%`), or a cumulative share
of Σ|T| (`cum:0.8`: the fewest neurons whose |T| add up to 80 % of the total).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TauRule:
    kind: str  # "count", "fraction" or "cumulative"
    value: float

    def __str__(self) -> str:
        if self.kind == "count":
            return str(int(self.value))
        if self.kind == "fraction":
            return f"{self.value:g}"
        return f"cum:{self.value:g}"


def parse_tau(text: str | int | float) -> TauRule:
    """Parse the CLI's --tau: an integer >= 1, a fraction in (0, 1) or `N%`, or `cum:F`."""
    raw = str(text).strip()
    try:
        if raw.startswith("cum:"):
            share = float(raw[4:])
            if not 0 < share <= 1:  # also refuses nan
                raise ValueError
            return TauRule("cumulative", share)
        if raw.endswith("%"):
            frac = float(raw[:-1]) / 100
            if not 0 < frac <= 1:
                raise ValueError
            return TauRule("fraction", frac)
        number = float(raw)
    except ValueError:
        raise ValueError(
            f"--tau {raw!r} is not understood: give a count (16), a fraction of the layer's width "
            "(0.05 or 5%), or a cumulative share of the total |T| (cum:0.8)"
        ) from None
    if not math.isfinite(number):
        raise ValueError(
            f"--tau {raw!r} is not a finite number: give a count (16), a fraction (0.05 or 5%) or cum:0.8"
        )
    if number >= 1 and number == int(number):
        return TauRule("count", int(number))
    if 0 < number < 1:
        return TauRule("fraction", number)
    raise ValueError(
        f"--tau {raw!r} is out of range: a count must be a whole number >= 1, a fraction in (0, 1)"
    )


WIDE_SHARE = 0.5  # a core of half a layer or more: masking tests there cannot be selective


def tau_share(rule: TauRule, width: int) -> float | None:
    """The share of a layer of `width` neurons that τ keeps per target (None for cum:F, which
    depends on the scores)."""
    if rule.kind == "count":
        return min(rule.value, width) / width if width > 0 else None
    if rule.kind == "fraction":
        return rule.value
    return None


def wide_tau_layers(rule: TauRule, widths: dict[str, int]) -> dict[str, float]:
    """The layers (name -> share) where τ takes WIDE_SHARE of the neurons or more."""
    shares = {name: tau_share(rule, width) for name, width in widths.items()}
    return {name: share for name, share in shares.items() if share is not None and share >= WIDE_SHARE}


def wide_tau_lines(rule: TauRule, widths: dict[str, int]) -> list[str]:
    """One line per layer where τ takes half the neurons or more: why that matters, what to do."""
    return [
        f"note: tau {rule} keeps {share:.0%} of {name}'s {widths[name]} neurons per target: a core of half "
        "the layer or more is no selection, and random groups that large switch the class off, so no "
        "masking test there can be selective; use a smaller --tau (e.g. 10%) for narrow layers"
        for name, share in wide_tau_layers(rule, widths).items()
    ]

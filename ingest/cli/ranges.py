"""Numeric option types with a range and the reason for it, checked when the options are parsed
(before any model is loaded). NaN and infinity are never numbers here."""

from __future__ import annotations

import math

import click


class Bounded(click.ParamType):
    """An int or float option in [low, high] (either bound may be None), e.g.
    ``Bounded(int, 1, why="the number of top patches per concept")``."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *, why: str):
        self.kind, self.low, self.high, self.why = kind, low, high, why
        self.name = "integer" if kind is int else "number"

    def convert(self, value, param, ctx):
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            try:
                number = self.kind(text)
            except ValueError:
                self.fail(
                    f"{text!r} is not {'a whole number' if self.kind is int else 'a number'}", param, ctx
                )
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number ({self.why})", param, ctx)
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            self.fail(f"{value!r} is out of range: it must be {self.describe()} ({self.why})", param, ctx)
        return number

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"between {_text(self.low)} and {_text(self.high)}"
        if self.low is not None:
            return f"at least {_text(self.low)}"
        return f"at most {_text(self.high)}"


def _text(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


COUNT = Bounded(int, 1, why="a count of at least one")
SEED = Bounded(int, 0, 2**32 - 1, why="a random seed for numpy and torch")
SCORE = Bounded(float, 0.0, 1.0, why="a score between 0 and 1")
SECONDS = Bounded(float, 0.001, why="a positive number of seconds")
STEPS = Bounded(int, 1, 10_000, why="integration steps of the integrated gradients")

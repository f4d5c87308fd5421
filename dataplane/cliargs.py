"""argparse types shared by the command lines (nvgw-dataplane, nvgwctl)."""
from __future__ import annotations

import argparse
import math


def seconds(high: float = math.inf, zero: bool = False):
    """An argparse type: a finite number of seconds above 0 (or 0, with `zero`), at
    most `high`; anything else is a usage error, not a traceback or a hang."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if math.isinf(v) or not (0 < v <= high or (zero and v == 0)):
            bound = "" if math.isinf(high) else f", at most {high:g}"
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number of seconds {'0 or ' if zero else ''}above 0{bound}")
        return v
    return parse

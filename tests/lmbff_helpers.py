"""Stand-ins for the LM-BFF raw data files (tests/lmbff/test_lmbff_data.py, test_lmbff_prepare.py)."""

from __future__ import annotations


def cr_lines(n0: int = 1300, n1: int = 1400) -> list[str]:
    """A custrev.all stand-in: label 1 first, the labels interleaved, each line numbered."""
    lines = []
    for i in range(max(n0, n1)):
        lines += [f"1 good {i}\n"] * (i < n1) + [f"0 bad {i}\n"] * (i < n0)
    return lines

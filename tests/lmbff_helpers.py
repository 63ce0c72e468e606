"""Stand-ins for the LM-BFF raw data files (tests/lmbff/test_lmbff_data.py, test_lmbff_prepare.py)."""

from __future__ import annotations


def cr_lines(n0: int = 1300, n1: int = 1400) -> list[str]:
    """A custrev.all stand-in: label 1 first, the labels interleaved, each line numbered."""
    lines = []
    for i in range(max(n0, n1)):
        lines += [f"1 good {i}\n"] * (i < n1) + [f"0 bad {i}\n"] * (i < n0)
    return lines


def sst2_kshot_root(tmp_path_factory, k: int):
    """A k-shot SST-2 folder (seed 42) generated from the fixture's raw files."""
    from conftest import FIXTURES
    from zoft.lmbff.catalog import LMBFF_TASKS
    from zoft.lmbff.kshot import generate_kshot

    root = tmp_path_factory.mktemp("kshot")
    generate_kshot(LMBFF_TASKS["sst-2-kshot"], FIXTURES / "lmbff" / "SST-2", root, k, [42])
    return root

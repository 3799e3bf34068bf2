"""Per-source analysis: naming the supplier whose samples the detectors flagged out of proportion."""

from __future__ import annotations

import numpy as np
import pytest

from sanitize.provenance import source_verdicts


def suppliers(sizes: dict[str, int], flagged_share: dict[str, float], seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Each source's samples, with a random ``flagged_share`` of them flagged."""
    rng = np.random.default_rng(seed)
    sources, flags = [], []
    for name, n in sizes.items():
        sources += [name] * n
        f = np.zeros(n, dtype=bool)
        f[rng.choice(n, size=int(round(flagged_share.get(name, 0.0) * n)), replace=False)] = True
        flags.append(f)
    return sources, np.concatenate(flags)


def named(sources: list[str], flags: np.ndarray) -> set[str]:
    return {v.source for v in source_verdicts(sources, flags) if v.suspicious}


def test_one_bad_source_is_named() -> None:
    sizes = {f"vendor-{k}": 6000 for k in range(10)}
    shares = {name: 0.002 for name in sizes} | {"vendor-3": 0.20}

    assert named(*suppliers(sizes, shares)) == {"vendor-3"}


def test_two_bad_sources_holding_half_the_data_are_both_named() -> None:
    # 10 % flagged in each bad source makes 5 % overall: against the overall share neither bad source
    # reaches twice it, against the other sources' share both do.
    sizes = {f"vendor-{k}": 3750 for k in range(10)} | {"vendor-3": 15000, "vendor-7": 15000}
    shares = {name: 0.002 for name in sizes} | {"vendor-3": 0.10, "vendor-7": 0.10}

    assert named(*suppliers(sizes, shares)) == {"vendor-3", "vendor-7"}


def test_sources_flagged_alike_are_not_named() -> None:
    sizes = {f"vendor-{k}": 6000 for k in range(10)}

    assert named(*suppliers(sizes, {name: 0.02 for name in sizes})) == set()
    assert named(*suppliers(sizes, {})) == set()


def test_the_verdicts_count_and_rank_the_sources() -> None:
    sources, flags = suppliers({"a": 1000, "b": 1000}, {"a": 0.10})

    verdicts = source_verdicts(sources, flags)

    assert [v.source for v in verdicts] == ["a", "b"]
    a = verdicts[0]
    assert (a.samples, a.quarantined) == (1000, 100)
    assert a.share == pytest.approx(0.10)
    assert a.ratio == pytest.approx(0.10 / (0.5 / 1001))  # b has no flag: half a sample keeps it finite
    assert a.p_value < 1e-20 and a.suspicious


def test_sources_and_verdicts_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="3 sources but 2 verdicts"):
        source_verdicts(["a", "b", "c"], np.array([True, False]))

"""The ingest spool hands values back run by run of neighbouring ranks, each value once,
whether it waited in memory or on disk (1,000 of 1,003 values here), and leaves no file
behind."""

from __future__ import annotations

import random
from pathlib import Path

from tracker.steps.outcome_spool import OutcomeSpool


def test_spool__runs_of_neighbouring_ranks_each_value_once(tmp_path: Path) -> None:
    ids = [f"item-{n:05d}" for n in range(1_003)]
    ranks = {item_id: rank for rank, item_id in enumerate(ids)}
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    spool: OutcomeSpool[tuple[str, int]] = OutcomeSpool(tmp_path, ranks, 100)
    for item_id in shuffled:
        spool.add(item_id, (item_id, ranks[item_id]))
    runs = list(spool.runs())
    assert [len(run) for run in runs] == [100] * 10 + [3]
    for number, run in enumerate(runs):
        assert {rank // 100 for _, rank in run} == {number}
    assert sorted(value for run in runs for value, _ in run) == ids
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_spool__closed_early__its_files_are_removed(tmp_path: Path) -> None:
    ranks = {f"i{n}": n for n in range(50)}
    spool: OutcomeSpool[str] = OutcomeSpool(tmp_path / "spool", ranks, 10)
    for item_id in ranks:
        spool.add(item_id, item_id)
    spool.close()
    assert list((tmp_path / "spool").iterdir()) == []

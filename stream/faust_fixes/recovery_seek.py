"""Table recovery crashes the worker when a rebalance lands in its middle.

Patches ``faust.tables.recovery.Recovery._seek_offsets`` (faust-streaming
0.15.3). ``Recovery._add`` registers every changelog partition it is given
with the offset None ("not known yet", ``offsets.setdefault(tp, None)``);
``_build_offsets`` replaces None with the earliest offset for the partitions
of the recovery round under way. A partition registered by a rebalance that
arrives while that round is between building and seeking keeps its None, and
``_seek_offsets`` hands it to aiokafka, whose ``seek`` raises
``ValueError('Offset must be a positive integer')``: the recovery service
crashes and takes the worker down (seen in the chaos suite's join/leave
scenario in CI, 2026-11-30). Related: faust-streaming/faust#155 and #176
(the offset -1 logic of ``_build_offsets`` and ``_seek_offsets``).

Seeking such a partition to its start is what the built offset would have
said for an in-memory table (whose persisted offset is always None): read the
whole changelog. Delete when: ``_seek_offsets`` no longer passes None to seek
(the test in tests/unit/test_faust_fixes.py then fails and says so).
"""

from __future__ import annotations

from typing import Any

from stream.faust_fixes import bulk_recovery, patching


async def _seek_offsets(self: Any, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
    """Faust's seek, with "offset not known yet" (None, or -1) read as the start;
    first the bulk reader's turn (bulk_recovery.py), which moves the offsets."""
    await bulk_recovery.read_ahead(self, tps, offsets, title)
    new_offsets = {}
    for tp in tps:
        offset = offsets[tp]
        new_offsets[tp] = 0 if offset is None or offset < 0 else offset
    await consumer.seek_wait(new_offsets)


def upstream() -> Any:
    from faust.tables.recovery import Recovery

    return patching.upstream(Recovery, "_seek_offsets")


def fix_recovery_seek() -> None:
    from faust.tables.recovery import Recovery

    patching.install(Recovery, "_seek_offsets", _seek_offsets)

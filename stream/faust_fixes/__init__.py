"""Workarounds of upstream Faust/aiokafka bugs, one module each.

Each module names the upstream issue or the function it patches and says when
it can be deleted; tests/unit/test_faust_fixes.py shows each bug (or the
patched behaviour) against the installed faust-streaming, so an upgrade tells
us which fixes are still needed. ``apply_all`` installs them before the app
is built.
"""

from __future__ import annotations

from stream.faust_fixes.acked_gaps import fix_acked_gaps
from stream.faust_fixes.commit_monitor import fix_commit_monitor
from stream.faust_fixes.fast_paths import speed_up_faust
from stream.faust_fixes.fetch_gaps import fix_fetch_gaps
from stream.faust_fixes.known_empty import fix_known_empty
from stream.faust_fixes.parallel_commits import fix_parallel_commits
from stream.faust_fixes.read_offset_race import fix_read_offset_race
from stream.faust_fixes.recovery_highwaters import fix_recovery_highwaters
from stream.faust_fixes.recovery_positions import fix_recovery_positions
from stream.faust_fixes.recovery_seek import fix_recovery_seek
from stream.faust_fixes.stop_commit import fix_stop_commit
from stream.faust_fixes.thread_seek import fix_thread_seek


def apply_all() -> None:
    """Install every patch (idempotent)."""
    fix_recovery_highwaters()
    fix_recovery_positions()
    fix_recovery_seek()
    fix_read_offset_race()
    fix_acked_gaps()
    fix_fetch_gaps()
    fix_known_empty()
    fix_stop_commit()
    fix_thread_seek()
    fix_commit_monitor()
    fix_parallel_commits()
    speed_up_faust()

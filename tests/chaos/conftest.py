"""Prints the chaos suite's figure table at the end of the run, captured or not."""

from __future__ import annotations

from tests.chaos.harness import RESULTS, RESULTS_FILE, table


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001
    if not RESULTS:
        return
    terminalreporter.section("chaos suite: events per scenario (lost and double-counted must be 0)")
    terminalreporter.write_line(table(RESULTS))
    terminalreporter.write_line(f"(also in {RESULTS_FILE})")

"""`funnel run` waits for a worker that rebuilds a large state, not for one that never answers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from stream.tools import runner
from tests.support import free_port


class Alive:
    """A worker process that is still running (what ``wait_until_ready`` polls)."""

    def poll(self) -> int | None:
        return None


def serve(answers: list[tuple[int, str]]) -> tuple[HTTPServer, str]:
    """/health/ready answers each (status, state) in turn, the last one for ever."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            status, state = answers.pop(0) if len(answers) > 1 else answers[0]
            body = json.dumps({"ready": status == 200, "state": state}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def test_a_recovering_worker_is_waited_for_past_the_start_limit(monkeypatch, capsys) -> None:
    monkeypatch.setattr(runner, "NOTE_EVERY_S", 0.4)
    server, web = serve([(503, "recovering")] * 4 + [(200, "ready")])
    try:
        assert runner.wait_until_ready(web, Alive(), start_s=0.5)
    finally:
        server.shutdown()
    assert "worker recovering" in capsys.readouterr().out


def test_a_worker_that_never_answers_did_not_start() -> None:
    web = f"http://127.0.0.1:{free_port()}"
    assert not runner.wait_until_ready(web, Alive(), start_s=0.5)


@pytest.mark.parametrize("code", [0, 1])
def test_a_worker_that_exited_did_not_start(code: int) -> None:
    class Exited:
        def poll(self) -> int:
            return code

    server, web = serve([(503, "joining")])
    try:
        assert not runner.wait_until_ready(web, Exited(), start_s=30)
    finally:
        server.shutdown()

"""OpenAI-compatible source against a local HTTP server: retries, schema checks, cache, cost, key hygiene."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest

from oripid.builders import layout
from oripid.errors import OripidError
from oripid.prompts.generate import PROMPTS_REPORT, generate_prompts

KEY = "sk-test-NEVER-WRITE-ME-0123456789"
N = 3


def reply(prompts, usage=(100, 20)) -> tuple[int, dict]:
    content = prompts if isinstance(prompts, str) else json.dumps({"prompts": prompts})
    body = {
        "model": "test-model",
        "choices": [{"message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
    }
    return 200, body


def good(tag: str):
    return reply([f"{tag} prompt {i}" for i in range(N)])


class Server:
    """Answers each POST with the next scripted (status, body); records requests and concurrency."""

    def __init__(self, script, delay: float = 0.0, default=None):
        self.script, self.delay, self.default = list(script), delay, default
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                    )
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    status, payload = server.script.pop(0) if server.script else server.default
                time.sleep(server.delay)
                with server.lock:
                    server.in_flight -= 1
                data = json.dumps(payload).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_KEY", KEY)


def options(server, **extra) -> dict:
    api = {"base_url": server.url, "model": "test-model", "api_key_env": "TEST_OPENAI_KEY", "concurrency": 1}
    api |= {"backoff_seconds": 0.01, "max_retries": 3, "max_invalid": 2} | extra
    return {"source": "openai", "per_origin": N, "openai": api}


def test_retry_schema_checks_cache_and_cost(workspace, api_key, caplog):
    caplog.set_level(logging.DEBUG)
    server = Server(
        [
            (429, {"error": {"message": "slow down"}}),
            good("a"),
            reply("this is {not json"),
            good("b"),
            reply(["only one"]),
            good("c"),
            good("d"),
        ]
    )
    try:
        summary = generate_prompts(workspace, **options(server))
        stats = summary.source_stats
        assert len(server.requests) == 7
        assert (stats["requests"], stats["retries"], stats["invalid_replies"]) == (7, 1, 2)
        # Usage counts every reply that arrived with usage (the invalid ones were paid for too).
        assert (stats["prompt_tokens"], stats["completion_tokens"]) == (600, 120)
        assert stats["cost_usd"] == pytest.approx((600 * 2.5 + 120 * 10) / 1e6)
        rows = pq.read_table(workspace / layout.PROMPTS_TABLE).to_pylist()
        assert len(rows) == 4 * N
        assert {r["prompt"].split()[0] for r in rows} == {"a", "b", "c", "d"}
        first = server.requests[0]
        assert first["path"] == "/v1/chat/completions" and first["auth"] == f"Bearer {KEY}"
        user = first["body"]["messages"][1]["content"]
        assert user[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
        assert first["body"]["response_format"] == {"type": "json_object"}

        # Rerun: every origin is served from the cache, the server sees nothing.
        table = (workspace / layout.PROMPTS_TABLE).read_bytes()
        again = generate_prompts(workspace, **options(server))
        assert len(server.requests) == 7 and again.source_stats["cache_hits"] == 4
        assert again.source_stats["requests"] == 0 and again.source_stats["cost_usd"] == 0
        assert (workspace / layout.PROMPTS_TABLE).read_bytes() == table
    finally:
        server.close()
    # The key is sent, never written or logged.
    for path in workspace.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in caplog.text
    assert "TEST_OPENAI_KEY" in (workspace / PROMPTS_REPORT).read_text()


def test_persistent_failures_are_recorded_and_fail_the_run(workspace, api_key):
    server = Server([], default=(503, {"error": "down"}))
    try:
        with pytest.raises(OripidError, match="fewer than 3 valid prompts"):
            generate_prompts(workspace, **options(server, max_retries=1))
    finally:
        server.close()
    report = json.loads((workspace / PROMPTS_REPORT).read_text())
    failed = report["source_stats"]["failed_origins"]
    assert len(failed) == 4 and all("HTTP 503" in reason for reason in failed.values())
    assert len(server.requests) == 8  # 4 origins x (1 try + 1 retry)


def test_client_errors_stop_at_once_without_the_key(workspace, api_key):
    server = Server([], default=(401, {"error": {"message": "bad key"}}))
    try:
        with pytest.raises(OripidError, match="HTTP 401") as info:
            generate_prompts(workspace, **options(server))
    finally:
        server.close()
    assert KEY not in str(info.value)


def test_concurrency_limit(workspace, api_key):
    server = Server([], delay=0.2, default=good("x"))
    try:
        generate_prompts(workspace, **options(server, concurrency=2), on_short="keep")
    finally:
        server.close()
    assert len(server.requests) == 4 and server.max_in_flight == 2


def test_missing_key_fails_at_construction(workspace, monkeypatch):
    monkeypatch.delenv("TEST_OPENAI_KEY", raising=False)
    with pytest.raises(OripidError, match="TEST_OPENAI_KEY is empty"):
        generate_prompts(workspace, source="openai", openai={"api_key_env": "TEST_OPENAI_KEY"})

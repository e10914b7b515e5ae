"""Operating the server: request ids, JSON logs, Prometheus metrics, readiness and circuit
breaking, read the way an operator reads them: the real server in a subprocess, scripted
upstreams speaking real HTTP, its stderr and its /metrics endpoint (docs/operations.md)."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.server import RunningServer, free_port
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script
from tests.support.ops import (
    BASE,
    DatabaseGate,
    Fakes,
    backend,
    lines_for,
    log_lines,
    model,
    scrape,
    value,
    wait_for_gauge,
)
from tests.support.postgres import postgres_url_or_skip

pytestmark = pytest.mark.e2e


class Upstreams(Fakes):
    def __init__(self) -> None:
        self.steady = FakeOpenAIUpstream()
        self.flaky = FakeOpenAIUpstream()
        self.down = FakeOpenAIUpstream()
        self.all = (self.steady, self.flaky, self.down)
        self.start()
        self.down.on("", Script(status=500))  # every chat request fails


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    fakes = Upstreams()
    yield fakes
    fakes.stop()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams
) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("operations")
    config = data_dir / "modelport.toml"
    config.write_text(
        BASE
        + model("ops/steady", backend(upstreams.steady.base_url, "steady"))
        + model(
            "ops/failover",
            backend(
                upstreams.flaky.base_url,
                "primary",
                priority=0,
                circuit_failures=3,
                circuit_cooldown=1.5,
            ),
            backend(upstreams.steady.base_url, "secondary", priority=1),
        )
        + model(
            "ops/solo",
            backend(upstreams.down.base_url, "solo", circuit_failures=2, circuit_cooldown=60),
        )
        + model("ops/failing", backend(upstreams.down.base_url, "failing", circuit_failures=0))
    )
    env = {"MODELPORT_LOG_FORMAT": "json", "MODELPORT_LOG_LEVEL": "info"}
    with RunningServer(data_dir, config=config, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        yield client


def chat(
    http: httpx.Client, model_id: str, text: str = "hello there", **extra: Any
) -> httpx.Response:
    headers = extra.pop("headers", {})
    body = {"model": model_id, "messages": [{"role": "user", "content": text}], **extra}
    return http.post("/v1/chat/completions", json=body, headers=headers)


# ----------------------------------------------------------------------------- request ids


def upstream_id(fake: FakeOpenAIUpstream) -> str | None:
    """The X-Request-Id of the upstream's last request."""
    headers = {name.lower(): value for name, value in fake.requests[-1].headers.items()}
    return headers.get("x-request-id")


def test_every_response_carries_a_request_id_and_a_valid_incoming_one_is_kept(
    http: httpx.Client, upstreams: Upstreams
) -> None:
    made = http.get("/v1/models")
    assert len(made.headers["x-request-id"]) == 24
    missing = http.get("/v1/no-such-route")
    assert missing.status_code == 404 and len(missing.headers["x-request-id"]) == 24
    assert made.headers["x-request-id"] != missing.headers["x-request-id"]

    # Made by the server: one id for the header, the completion and its usage row.
    answer = chat(http, "ops/steady")
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    assert answer.json()["id"] == "chatcmpl-" + request_id
    assert upstream_id(upstreams.steady) == request_id

    # Sent by the client: kept, passed upstream, stored with the usage row.
    mine = "checkout-7f3a.retry:2"
    answer = chat(http, "ops/steady", headers={"X-Request-Id": mine})
    assert answer.headers["x-request-id"] == mine
    assert upstream_id(upstreams.steady) == mine
    found = http.get("/api/v1/generation", params={"request_id": mine})
    assert found.status_code == 200, found.text
    row = found.json()["data"]
    assert row["request_id"] == mine and answer.json()["id"] == "chatcmpl-" + row["id"]
    by_id = http.get("/api/v1/generation", params={"id": answer.json()["id"]}).json()["data"]
    assert by_id["request_id"] == mine

    # Not an id (spaces, too long, not ASCII): replaced.
    for bad in (b"two words", b"x" * 129, "a\u00e9b".encode("latin-1")):
        answer = chat(http, "ops/steady", headers={"X-Request-Id": bad})
        assert answer.status_code == 200
        assert len(answer.headers["x-request-id"]) == 24


# ----------------------------------------------------------------------------- logs


def test_a_request_leaves_one_json_access_line_with_its_id_and_no_secret(
    server: RunningServer, http: httpx.Client
) -> None:
    mine = "access-line-1"
    answer = chat(http, "ops/steady", headers={"X-Request-Id": mine}, stream=True)
    assert answer.status_code == 200
    lines = lines_for(server, mine)
    access = [line for line in lines if line["logger"] == "modelport.access"]
    assert len(access) == 1
    line = access[0]
    assert line["level"] == "info" and line["msg"] == "POST /v1/chat/completions 200"
    assert (line["method"], line["path"], line["status"], line["door"]) == (
        "POST",
        "/v1/chat/completions",
        200,
        "openai",
    )
    assert (line["model"], line["backend"]) == ("ops/steady", "steady")
    usage = http.get("/api/v1/generation", params={"request_id": mine}).json()["data"]
    assert line["prompt_tokens"] == usage["tokens_prompt"] > 0
    assert line["completion_tokens"] == usage["tokens_completion"] > 0
    assert line["cost_nano"] == usage["cost_nano"] > 0
    assert isinstance(line["account_id"], int) and line["key_id"] == usage["key_id"]
    assert line["latency_ms"] >= line["ttft_ms"] > 0
    assert line["ts"].endswith("+00:00") and isinstance(line["pid"], int)
    # Every line is JSON (log_lines parses each), and no key's secret is ever written.
    assert server.admin_key not in server.log_path.read_text()


def test_an_upstream_failure_is_logged_once_with_the_request_id(
    server: RunningServer, http: httpx.Client, upstreams: Upstreams
) -> None:
    mine = "failing-before-start"
    answer = chat(http, "ops/failing", headers={"X-Request-Id": mine})
    assert answer.status_code == 502
    lines = lines_for(server, mine)
    failures = [line for line in lines if line["logger"] == "modelport.inference"]
    assert len(failures) == 1, lines
    failure = failures[0]
    assert failure["level"] == "warning"
    assert (failure["backend"], failure["error_kind"], failure["started"]) == (
        "failing",
        "upstream_error",
        False,
    )
    assert "HTTP 500" in failure["msg"]
    access = next(line for line in lines if line["logger"] == "modelport.access")
    assert (access["status"], access["error_kind"]) == (502, "upstream_error")

    # After the stream started: the access line says 200 went out, and which error ended it.
    upstreams.steady.on("BREAKS-MID-STREAM", Script(text=["one", " two"], error_after=2))
    mine = "failing-mid-stream"
    answer = chat(
        http,
        "ops/steady",
        "BREAKS-MID-STREAM",
        headers={"X-Request-Id": mine},
        stream=True,
        stream_options={"include_usage": True},
    )
    assert answer.status_code == 200 and '"error"' in answer.text
    # What the failed stream cost is told to the client, after its error.
    chunks = [
        json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")
    ]
    billed = [chunk["usage"] for chunk in chunks if chunk.get("usage")]
    assert len(billed) == 1 and billed[0]["completion_tokens"] > 0
    lines = lines_for(server, mine)
    failures = [line for line in lines if line["logger"] == "modelport.inference"]
    assert [(f["backend"], f["started"]) for f in failures] == [("steady", True)]
    access = next(line for line in lines if line["logger"] == "modelport.access")
    assert access["status"] == 200 and access["error_status"] == 502
    assert access["completion_tokens"] > 0  # what was relayed before the failure is billed


# ----------------------------------------------------------------------------- metrics


def test_a_request_shows_up_in_the_counters_and_the_histograms(
    server: RunningServer, http: httpx.Client
) -> None:
    before = scrape(server.base_url)
    answer = chat(http, "ops/steady", stream=False)
    assert answer.status_code == 200
    usage = answer.json()["usage"]
    after = scrape(server.base_url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"door": "openai", "model": "ops/steady", "backend": "steady", "status": "200"}
    assert grew("modelport_requests_total", **ok) == 1
    assert (
        grew("modelport_tokens_total", model="ops/steady", kind="prompt") == usage["prompt_tokens"]
    )
    assert (
        grew("modelport_tokens_total", model="ops/steady", kind="completion")
        == usage["completion_tokens"]
    )
    generation = http.get("/api/v1/generation", params={"id": answer.json()["id"]}).json()
    assert (
        grew("modelport_cost_nano_cny_total", model="ops/steady") == generation["data"]["cost_nano"]
    )
    hist = {"model": "ops/steady", "backend": "steady"}
    assert grew("modelport_request_duration_seconds_count", **hist) == 1
    assert grew("modelport_time_to_first_token_seconds_count", **hist) == 1
    assert grew("modelport_request_duration_seconds_bucket", le="+Inf", **hist) == 1
    assert value(after, "modelport_requests_in_flight", model="ops/steady") == 0
    assert value(after, "modelport_circuit_state", backend="steady") == 0
    # The write-behind gauges exist (their values depend on the moment).
    assert ("modelport_billing_write_behind_lag_seconds", ()) in after
    assert ("modelport_billing_write_behind_pending", ()) in after


def test_metrics_need_the_token_or_a_loopback_client(tmp_path: Path) -> None:
    config = tmp_path / "modelport.toml"
    config.write_text(BASE)
    env = {"MODELPORT_METRICS_TOKEN": "scrape-secret", "MODELPORT_TRUSTED_PROXIES": "127.0.0.1"}
    with RunningServer(tmp_path / "token", config=config, env=env) as running:
        refused = httpx.get(running.base_url + "/metrics")
        assert refused.status_code == 403 and "MODELPORT_METRICS_TOKEN" in refused.text
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(running.base_url + "/metrics", headers=wrong).status_code == 403
        scrape(running.base_url, headers={"Authorization": "Bearer scrape-secret"})
    # No token: loopback clients only; one a trusted proxy vouches for elsewhere is refused.
    env = {"MODELPORT_TRUSTED_PROXIES": "127.0.0.1"}
    with RunningServer(tmp_path / "loopback", config=config, env=env) as running:
        scrape(running.base_url)
        elsewhere = {"X-Forwarded-For": "203.0.113.9"}
        assert httpx.get(running.base_url + "/metrics", headers=elsewhere).status_code == 403


def test_the_in_flight_gauges_count_a_request_while_it_runs(
    server: RunningServer, http: httpx.Client, upstreams: Upstreams
) -> None:
    upstreams.steady.on("SLOW-TO-START", Script(text=["late"], first_byte_delay=1.5))
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(chat, http, "ops/steady", "SLOW-TO-START")
        gauge = "modelport_requests_in_flight"
        assert wait_for_gauge(server.base_url, gauge, 1, model="ops/steady") == 1
        during = scrape(server.base_url)
        assert value(during, "modelport_backend_in_flight", backend="steady") == 1
        assert running.result().status_code == 200
    after = scrape(server.base_url)
    assert value(after, "modelport_requests_in_flight", model="ops/steady") == 0
    assert value(after, "modelport_backend_in_flight", backend="steady") == 0
    # Every configured model has a series, whether or not it was asked for.
    assert ("modelport_requests_in_flight", (("model", "ops/failover"),)) in after


def test_metrics_add_up_over_worker_processes(tmp_path: Path, upstreams: Upstreams) -> None:
    config = tmp_path / "modelport.toml"
    config.write_text(BASE + model("ops/steady", backend(upstreams.steady.base_url, "steady")))
    env = {"MODELPORT_WORKERS": "2"}
    with RunningServer(tmp_path / "workers", config=config, env=env) as running:
        headers = {"Authorization": f"Bearer {running.admin_key}"}
        body = {"model": "ops/steady", "messages": [{"role": "user", "content": "hi"}]}

        def ask(_: int) -> str:
            # A connection per request, several open at once, so that both workers accept
            # some (the kernel may hand a lone sequential client to one worker every time).
            with httpx.Client(base_url=running.base_url, headers=headers) as client:
                answer = client.post("/v1/chat/completions", json=body)
                assert answer.status_code == 200
                return answer.headers["x-request-id"][:12]  # the process's id prefix

        served: list[str] = []
        with ThreadPoolExecutor(max_workers=6) as pool:
            while len(set(served)) < 2 and len(served) < 240:
                served += pool.map(ask, range(6))
        assert len(set(served)) == 2, "both workers should have served requests"
        labels = {"door": "openai", "model": "ops/steady", "backend": "steady", "status": "200"}
        # Whichever worker answers the scrape, it counts every request of both: its own at
        # once, the other's once that worker hands its tallies over (each second).
        deadline = time.monotonic() + 5
        while True:
            with httpx.Client(base_url=running.base_url) as client:
                answer = client.get("/metrics")
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(answer.text)
                for s in family.samples
            }
            counted = value(samples, "modelport_requests_total", **labels)
            assert counted <= len(served)
            if counted == len(served):
                break
            assert time.monotonic() < deadline, f"{counted} of {len(served)} counted after 5 s"
            time.sleep(0.1)


# ----------------------------------------------------------------------------- circuits


def test_a_failing_backend_stops_getting_traffic_and_gets_it_back_once_it_recovers(
    server: RunningServer, http: httpx.Client, upstreams: Upstreams
) -> None:
    flaky = upstreams.flaky
    flaky.on("", Script(status=500))
    before = flaky.chat_requests()
    for _ in range(10):
        answer = chat(http, "ops/failover")
        assert answer.status_code == 200, answer.text  # served by the secondary
    # Three failures in a row opened the primary's circuit: it saw three requests, not ten.
    assert flaky.chat_requests() - before == 3
    samples = scrape(server.base_url)
    assert value(samples, "modelport_circuit_state", backend="primary") == 2
    assert value(samples, "modelport_circuit_opened_total", backend="primary") == 1
    assert (
        value(samples, "modelport_upstream_errors_total", backend="primary", kind="upstream_error")
        == 3
    )
    assert (
        value(
            samples,
            "modelport_requests_total",
            door="openai",
            model="ops/failover",
            backend="secondary",
            status="200",
        )
        == 10
    )

    # It recovers; after the cool-down one request probes it, then it serves again.
    flaky.off("")
    time.sleep(1.6)
    for _ in range(3):
        answer = chat(http, "ops/failover", stream=True)
        assert answer.status_code == 200
    assert flaky.chat_requests() - before == 6
    assert value(scrape(server.base_url), "modelport_circuit_state", backend="primary") == 0
    lines = [line["msg"] for line in log_lines(server) if line["logger"] == "modelport.circuit"]
    assert any("primary circuit open" in msg for msg in lines)
    assert any("primary answers again: circuit closed" in msg for msg in lines)


def test_a_model_whose_only_backend_is_open_is_refused_at_once_in_both_doors(
    server: RunningServer, http: httpx.Client, upstreams: Upstreams
) -> None:
    for _ in range(2):
        assert chat(http, "ops/solo").status_code == 502
    seen = upstreams.down.chat_requests()
    refused = chat(http, "ops/solo")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "backend_unavailable"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    anthropic = http.post(
        "/api/anthropic/v1/messages",
        json={
            "model": "ops/solo",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"anthropic-version": "2023-06-01"},
    )
    assert anthropic.status_code == 503
    assert anthropic.json()["error"]["type"] == "overloaded_error"
    assert upstreams.down.chat_requests() == seen  # neither reached the upstream
    ready = http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["models_unavailable"] == ["ops/solo"]
    assert ready.json()["database"] == "ok"
    assert http.get("/healthz").status_code == 200  # alive all the same


# ----------------------------------------------------------------------------- readiness


def test_readiness_follows_the_database_and_the_backends(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    with postgres_url_or_skip() as url:
        parts = urlsplit(url)
        gate = DatabaseGate((parts.hostname or "127.0.0.1", parts.port or 5432))
        try:
            gated = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{gate.port}"))
            dead = f"http://127.0.0.1:{free_port()}/v1"
            config = tmp_path / "modelport.toml"
            config.write_text(
                BASE
                + model("ops/steady", backend(upstreams.steady.base_url, "steady"))
                # Nothing listens there: active probes open its circuit without any request.
                + model(
                    "ops/probed",
                    backend(dead, "probed", circuit_failures=2, probe_interval=0.2),
                )
            )
            env = {"MODELPORT_DATABASE_URL": gated}
            with RunningServer(tmp_path / "ready", config=config, env=env) as running:
                readyz = running.base_url + "/readyz"
                deadline = time.monotonic() + 10
                while True:
                    report = httpx.get(readyz, timeout=10)
                    if "ops/probed" in report.json().get("models_unavailable", []):
                        break
                    assert time.monotonic() < deadline, report.text
                    time.sleep(0.1)
                assert report.status_code == 503 and report.json()["database"] == "ok"
                assert report.json()["models_unavailable"] == ["ops/probed"]

                gate.close()
                report = httpx.get(readyz, timeout=10)
                assert report.status_code == 503, report.text
                assert report.json()["database"] != "ok"
                assert httpx.get(running.base_url + "/healthz").status_code == 200

                gate.open()
                deadline = time.monotonic() + 10
                while httpx.get(readyz, timeout=10).json()["database"] != "ok":
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
        finally:
            gate.stop()


# ----------------------------------------------------------------------------- the model list


def test_the_model_list_shows_what_can_answer_and_the_catalog_on_request(
    http: httpx.Client,
) -> None:
    listed = {item["id"] for item in http.get("/v1/models").json()["data"]}
    assert listed == {"ops/steady", "ops/failover", "ops/solo", "ops/failing"}
    everything = {item["id"] for item in http.get("/v1/models?all=true").json()["data"]}
    assert listed < everything and "qwen/qwen3-8b" in everything
    anthropic = {"anthropic-version": "2023-06-01"}
    listed = {item["id"] for item in http.get("/v1/models", headers=anthropic).json()["data"]}
    assert "qwen/qwen3-8b" not in listed and "ops/steady" in listed
    everything = http.get("/api/anthropic/v1/models?all=1", headers=anthropic).json()["data"]
    assert "qwen/qwen3-8b" in {item["id"] for item in everything}
    # A catalog model without a backend is still described; asking it to answer says why not.
    assert http.get("/v1/models/qwen/qwen3-8b").status_code == 200
    refused = chat(http, "qwen/qwen3-8b")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_configured"


# ----------------------------------------------------------------------------- TLS


def test_the_openai_sdk_streams_over_https_served_by_the_server_itself(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (it makes the test's certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    config = tmp_path / "modelport.toml"
    config.write_text(BASE + model("ops/steady", backend(upstreams.steady.base_url, "steady")))
    env = {"MODELPORT_TLS_CERT": str(cert), "MODELPORT_TLS_KEY": str(key)}
    trust = ssl.create_default_context(cafile=str(cert))
    running = RunningServer(tmp_path / "tls", config=config, env=env)
    running.base_url = f"https://127.0.0.1:{running.port}"
    running.data_dir.mkdir()
    stdout = running.data_dir / "stdout.txt"
    # Not RunningServer.start(): it waits for an answer over plain HTTP.
    with stdout.open("w") as out, running.log_path.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelport", "serve"],
            env=running.env,
            stdout=out,
            stderr=err,
            text=True,
        )
    running.process = process
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(running.base_url + "/healthz", verify=trust).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, running.output()
            time.sleep(0.2)
        secret = next(line for line in stdout.read_text().splitlines() if line.startswith("sk-"))
        client = openai.OpenAI(
            base_url=running.base_url + "/v1",
            api_key=secret,
            http_client=openai.DefaultHttpxClient(verify=trust),
            max_retries=0,
        )
        stream = client.chat.completions.create(
            model="ops/steady",
            messages=[{"role": "user", "content": "over tls"}],
            stream=True,
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "Echo: over tls"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{running.port}/healthz", timeout=5)
    finally:
        running.stop()

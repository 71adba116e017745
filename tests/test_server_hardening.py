"""The server never freezes: heavy or hostile requests, slow clients, engine failures, Ctrl+C, a busy
port. A tiny random-weight model keeps it quick (its tokenizer is Mistral's real vocabulary)."""
from __future__ import annotations

import json
import logging
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from serverutil import ServerThread, free_port, in_thread, wait_up

from runtime.chat_sandbox import Limits
from runtime.engine import Engine
from runtime.server import listen

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "tests" / "fixtures" / "models" / "dense-Q8_0.gguf"
HEALTH_BOUND = 2.0  # seconds: generous, "does not freeze" rather than a speed claim
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture()
def engine() -> Engine:
    eng = Engine.load(MODEL, n_ctx=256)
    yield eng
    eng.close()


def random_text(n: int, seed: int = 1) -> str:
    return "".join(random.Random(seed).choices("abcdefghij klmnopq,.\n", k=n))


def health_while(busy: threading.Thread, url: str, min_polls: int = 2) -> None:
    """GET /health keeps answering, each within HEALTH_BOUND, while `busy` runs; at least
    `min_polls` answers must come while it still ran, or the test would prove nothing."""
    polls = 0
    while busy.is_alive():
        r = requests.get(url + "/health", timeout=HEALTH_BOUND)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        polls += busy.is_alive()
        time.sleep(0.05)
    assert polls >= min_polls, f"the heavy request ended after {polls} /health answers: too quick to tell"


# -- CPU work off the event loop -----------------------------------------------------------------------

def test_health_answers_during_a_big_tokenize(engine: Engine) -> None:
    text = random_text(3 << 20, seed=2)  # seconds of tokenizing, and three million ids to write
    with ServerThread(engine) as srv:
        t, out = in_thread(lambda: requests.post(srv.url + "/tokenize", json={"content": text}, timeout=300))
        time.sleep(0.2)
        health_while(t, srv.url)
        t.join()
        r = out["response"]
        assert r.status_code == 200 and len(r.json()["tokens"]) > len(text) // 8


def test_huge_chat_prompt_is_refused_quickly_and_health_answers(engine: Engine) -> None:
    text = random_text(6 << 20, seed=3)
    with ServerThread(engine) as srv:
        t, out = in_thread(lambda: requests.post(srv.url + "/v1/chat/completions", timeout=300, json={
            "messages": [{"role": "user", "content": text}], "max_tokens": 4}))
        health_while(t, srv.url, min_polls=0)  # refused without tokenizing: it may well be quick
        t.join()
        r = out["response"]
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "context_length_exceeded"
        # and a prompt that fits still works
        ok = requests.post(srv.url + "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 3}, timeout=60)
        assert ok.status_code == 200, ok.text


def test_hostile_template_answers_400_and_the_server_goes_on(engine: Engine) -> None:
    engine.template = type(engine.template)(
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}")
    engine.template.limits = Limits(seconds=1.5)
    with ServerThread(engine) as srv:
        t, out = in_thread(lambda: requests.post(srv.url + "/v1/chat/completions",
                                                 json={"messages": HELLO, "max_tokens": 3}, timeout=60))
        time.sleep(0.2)
        health_while(t, srv.url)
        t.join()
        r = out["response"]
        assert r.status_code == 400
        message = r.json()["error"]["message"]
        assert "chat template" in message and "longer than 1.5 s" in message and "\n" not in message
        ok = requests.post(srv.url + "/v1/completions", json={"prompt": "hello", "max_tokens": 3}, timeout=60)
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("template", ["{{ 'a' * 10**9 }}", "{{ [0] * 10**9 }}",
                                      "{% for i in range(10**12) %}x{% endfor %}",
                                      "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"])
def test_template_that_would_take_gigabytes_answers_400(engine: Engine, template: str) -> None:
    engine.template = type(engine.template)(template)
    with ServerThread(engine) as srv:
        r = requests.post(srv.url + "/v1/chat/completions", json={"messages": HELLO}, timeout=60)
        assert r.status_code == 400
        message = r.json()["error"]["message"]
        assert message.startswith("the model's chat template failed: chat template") and "\n" not in message


# -- malformed bodies ------------------------------------------------------------------------------------

BAD_BODIES = {
    "deep array": b"[" * 100_000 + b"]" * 100_000,
    "deep object in a field": b'{"messages": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
    "not UTF-8": b'{"messages": "\xff\xfe"}',
    "truncated": b'{"messages": [{"role": "user", "content": "hi"',
    "empty": b"",
    "an array": b"[1, 2]",
    "a huge integer": b'{"max_tokens": ' + b"9" * 10_000 + b"}",
    "a NaN": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    "messages of the wrong type": b'{"messages": [[[[[]]]]]}',
}


def test_non_finite_numbers_are_named_in_the_error(engine: Engine) -> None:
    """NaN, Infinity and 1e400 (Python's json reads them) are numbers that are not finite: the
    400 says which, instead of 'must be a number, not a number'."""
    with ServerThread(engine) as srv:
        for raw, kind in ((b"NaN", "not nan"), (b"1e400", "not infinity"), (b"-Infinity", "not -infinity")):
            for field in (b"temperature", b"max_tokens"):
                body = b'{"messages": [{"role": "user", "content": "hi"}], "' + field + b'": ' + raw + b"}"
                r = requests.post(srv.url + "/v1/chat/completions", data=body, timeout=30,
                                  headers={"Content-Type": "application/json"})
                message = r.json()["error"]["message"]
                assert r.status_code == 400 and message.endswith(kind), message


def test_a_lone_surrogate_in_a_body_is_read_as_a_replacement_character(engine: Engine) -> None:
    """JSON's \\ud800 (JavaScript writes one for a string cut inside an emoji) is no character
    UTF-8 can hold: the echo, the rendered template and a stop string failed as 500s after the
    work was done. Read as U+FFFD, as the tokenizer reads one; a pair stays the character."""
    with ServerThread(engine) as srv:
        for route, body, text_of in (
            ("/apply-template", b'{"messages": [{"role": "user", "content": "bad \\ud800 x \\ud83d\\ude00"}]}',
             lambda j: j["prompt"]),
            ("/v1/completions", b'{"prompt": "bad \\ud800 x \\ud83d\\ude00", "max_tokens": 2, "echo": true}',
             lambda j: j["choices"][0]["text"]),
            ("/completion", b'{"prompt": "bad \\udc00 x \\ud83d\\ude00", "n_predict": 2, "stop": ["\\ud800"]}',
             lambda j: "bad \ufffd x \U0001F600"),  # (the 200 is the point: its prompt is shown as tokens)
        ):
            r = requests.post(srv.url + route, data=body, timeout=60, headers={"Content-Type": "application/json"})
            assert r.status_code == 200, (route, r.text)
            assert "bad \ufffd x \U0001F600" in text_of(r.json()), (route, r.json())


@pytest.mark.parametrize("name", BAD_BODIES)
def test_malformed_body_is_a_400_with_one_line(engine: Engine, name: str) -> None:
    with ServerThread(engine) as srv:
        for route in ("/v1/chat/completions", "/v1/completions", "/tokenize", "/generate"):
            r = requests.post(srv.url + route, data=BAD_BODIES[name], timeout=30,
                              headers={"Content-Type": "application/json"})
            assert r.status_code in (400, 422), (route, r.status_code, r.text)
            body = r.json()
            message = body["error"]["message"] if isinstance(body.get("error"), dict) else body["error"]
            assert message and "\n" not in message and len(message) < 300, (route, message)
        assert requests.get(srv.url + "/health", timeout=5).status_code == 200


# -- slow clients ----------------------------------------------------------------------------------------

def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True if the server closed `sock` within `seconds` (whatever it wrote first)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_queued_clients_that_left_free_their_places_in_the_queue(engine: Engine) -> None:
    """64 queued requests whose clients hung up behind a long generation still counted against
    the queue's limit (64 x --parallel) until they reached its head: every new request was a 503."""
    engine.context_shift = True  # (the long generation runs past the small context)
    with ServerThread(engine, parallel=1) as srv:
        long_done = threading.Event()

        def long_stream() -> None:
            with requests.post(srv.url + "/completion", json={"prompt": "a", "n_predict": 200000, "ignore_eos": True,
                                                              "stream": True}, stream=True, timeout=120) as r:
                for _ in r.iter_lines():
                    if long_done.is_set():
                        return
        t = threading.Thread(target=long_stream)
        t.start()
        try:
            def wait_for_health(pred) -> None:  # up to 10 s
                for _ in range(200):
                    if pred(requests.get(srv.url + "/health", timeout=5).json()):
                        return
                    time.sleep(0.05)
            wait_for_health(lambda h: h["slots_processing"] == 1)
            body = json.dumps({"messages": HELLO, "max_tokens": 2}).encode()
            head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            first = socket.create_connection(("127.0.0.1", srv.port))  # stays: the queue's head
            first.sendall(head + body)
            wait_for_health(lambda h: h["requests_waiting"] == 1)
            socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(63)]
            for sock in socks:
                sock.sendall(head + body)
            wait_for_health(lambda h: h["requests_waiting"] == 64)
            assert requests.get(srv.url + "/health", timeout=5).json()["requests_waiting"] == 64
            for sock in socks:
                sock.close()
            wait_for_health(lambda h: h["requests_waiting"] == 1)
            assert requests.get(srv.url + "/health", timeout=5).json()["requests_waiting"] == 1
            # a new request waits its turn (no answer yet), not a 503
            with socket.create_connection(("127.0.0.1", srv.port)) as sock:
                sock.sendall(head + body)
                sock.settimeout(1.5)
                with pytest.raises(socket.timeout):
                    print(sock.recv(200))
            first.close()
        finally:
            long_done.set()
            t.join(timeout=60)
            engine.context_shift = False


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n",
                                  b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"con"])
def test_slow_client_is_disconnected(engine: Engine, sent: bytes) -> None:
    with ServerThread(engine, header_timeout=1.0) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        with sock:
            sock.sendall(sent)
            assert closed_within(sock, 6.0), "the server kept a silent connection open"
        # a client that sends its request in time is served, also after a pause between requests
        with requests.Session() as s:
            assert s.get(srv.url + "/health", timeout=5).status_code == 200
            time.sleep(1.2)
            assert s.get(srv.url + "/health", timeout=5).status_code == 200


def test_header_sent_a_byte_at_a_time_is_cut_off(engine: Engine) -> None:
    with ServerThread(engine, header_timeout=1.0) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
        closed, t0 = False, time.monotonic()
        with sock:
            sock.settimeout(0.2)
            for byte in head:  # one byte every 0.2 s: each byte alone is in time, the head is not
                if time.monotonic() - t0 > 8:
                    break
                try:
                    sock.sendall(bytes([byte]))
                    if sock.recv(4096) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    closed = True
                    break
        assert closed, "the server kept a dripping header open"


# -- engine failures ----------------------------------------------------------------------------------

def test_engine_failure_ends_that_request_only(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    forward = engine.model.decode  # the server's one forward call per step
    armed = {"fail": False}

    def failing(*args: Any, **kwargs: Any) -> Any:
        if armed["fail"]:
            armed["fail"] = False
            raise FloatingPointError("non-finite logits (injected)")
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine.model, "decode", failing)
    chat = {"messages": HELLO, "max_tokens": 8}
    with ServerThread(engine) as srv:
        ok = requests.post(srv.url + "/v1/chat/completions", json=chat, timeout=60)
        assert ok.status_code == 200 and srv.app.state.scheduler.slot_info()[0]["n_cached"] > 0
        armed["fail"] = True
        r = requests.post(srv.url + "/v1/chat/completions", json=chat, timeout=60)
        assert r.status_code == 500
        assert r.json()["error"]["message"] == "generation failed: non-finite logits (injected)"
        assert srv.app.state.scheduler.slot_info()[0]["n_cached"] == 0  # the suspect cache was dropped
        armed["fail"] = True
        with requests.post(srv.url + "/v1/chat/completions", stream=True, timeout=60,
                           json={**chat, "stream": True}) as s:
            events = [line for line in s.iter_lines() if line.startswith(b"data: ")]
        assert json.loads(events[-1][6:])["error"]["message"].endswith("(injected)")
        ok = requests.post(srv.url + "/v1/chat/completions", json=chat, timeout=60)
        assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] in ("stop", "length")


# -- the log line --------------------------------------------------------------------------------------

def test_one_log_line_per_request(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llamapack.server")
    with ServerThread(engine) as srv:
        requests.get(srv.url + "/health", timeout=5)
        r = requests.post(srv.url + "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 5}, timeout=60)
        requests.get(srv.url + "/nowhere", timeout=5)
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "llamapack.server"]
    n = r.json()["usage"]
    chat = [line for line in lines if "POST /v1/chat/completions" in line]
    assert len(chat) == 1
    assert chat[0].startswith("127.0.0.1 POST /v1/chat/completions 200 ")
    assert f"prompt {n['prompt_tokens']} tokens" in chat[0] and f"{n['completion_tokens']} generated" in chat[0]
    assert " ms" in chat[0]
    assert any(line.startswith("127.0.0.1 GET /nowhere 404 ") for line in lines)
    assert not any("/health" in line for line in lines)  # polled: not logged


def half_sent(port: int) -> socket.socket:
    """A connection that sent a request's head and the start of its body, and waits."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"prompt\":")
    time.sleep(0.3)  # (its handler is reading the body now)
    return sock


def test_a_client_that_leaves_during_its_body_is_a_499(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """Not an internal error (a 500 and "internal error ... ClientDisconnect" in the log)."""
    caplog.set_level(logging.INFO, logger="llamapack.server")
    with ServerThread(engine) as srv:
        half_sent(srv.port).close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("POST" in r.getMessage() for r in caplog.records):
            time.sleep(0.05)
        ok = requests.post(srv.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=60)
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "llamapack.server"]
    assert any(line.startswith("127.0.0.1 POST /v1/completions 499 ") for line in lines), lines
    assert not any("internal error" in line or " 500 " in line for line in lines), lines
    assert ok.status_code == 200


# -- the process: Ctrl+C, a busy port -----------------------------------------------------------------

def start_server(*args: str, model: Path = MODEL) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "runtime", "-m", str(model), "--server", "--nobrowser", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_with_requests_in_flight_stops_cleanly(smollm2_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server("--port", str(port), "-c", "2048", "--parallel", "2", model=smollm2_path)
    try:
        wait_up(url, proc)
        # greedy counting goes on to the end of the context: minutes, on a real model
        long = {"prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9,", "max_tokens": 2000, "temperature": 0}
        streamed: list[bytes] = []

        def stream() -> requests.Response:
            with requests.post(url + "/v1/completions", json={**long, "stream": True}, stream=True,
                               timeout=60) as r:
                streamed.extend(r.iter_lines())
                return r

        t1, _ = in_thread(stream)
        t2, plain = in_thread(lambda: requests.post(url + "/v1/completions", json=long, timeout=60))
        # and a tokenize of many seconds, which exiting must not wait for
        text = random_text(7 << 20)
        t3, _ = in_thread(lambda: requests.post(url + "/tokenize", json={"content": text}, timeout=60))
        # and a request whose body is still arriving (its handler waits for the rest)
        half = half_sent(port)
        deadline = time.monotonic() + 30
        while not any(line.startswith(b"data: ") for line in streamed) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert t1.is_alive() and t2.is_alive() and t3.is_alive(), "the requests ended before Ctrl+C"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        took = time.monotonic() - t0
        half.settimeout(10)
        half_answer = b""
        while chunk := half.recv(1 << 16):  # to the end: the server is gone, its side closed
            half_answer += chunk
        half.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    for t in (t1, t2, t3):
        t.join(10)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err and "ERROR" not in err, err
    assert took < 6, f"shutting down took {took:.1f} s"
    assert err.rstrip().splitlines()[-1] == "llamapack: server stopped"
    assert plain["response"].status_code == 503  # cut, with a reason
    assert not t1.is_alive() and b"[DONE]" not in streamed  # the stream was cut, not left hanging
    # the half-sent request: a 503 at once (it was a 500 and a traceback when uvicorn cancelled it)
    assert half_answer.startswith(b"HTTP/1.1 503 ") and b"shutting down" in half_answer, half_answer
    # one line per request, from llamapack, none from uvicorn's access log
    assert err.count("POST /v1/completions") == 3 and "HTTP/1.1" not in err


def test_ctrl_c_in_a_terminal_stops_a_packed_server_cleanly(runtime_exe: Path, smollm2_path: Path,
                                                            tmp_path: Path) -> None:
    """A terminal's Ctrl+C signals the whole foreground process group, and the one-file runtime's
    bootloader forwards it to the server too: SIGINT twice, milliseconds apart. That is one
    Ctrl+C: a graceful stop and one line (a second SIGINT used to force uvicorn's exit, with a
    traceback from the cancelled lifespan)."""
    import os

    from packer.build import build

    packed = build(smollm2_path, tmp_path / "smol.llamafile", runtime_exe, progress=False).output
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(packed), "--server", "--nobrowser", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_up(url, proc)
        streamed: list[bytes] = []

        def stream() -> None:
            body = {"prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9,", "max_tokens": 2000, "temperature": 0, "stream": True}
            with requests.post(url + "/v1/completions", json=body, stream=True, timeout=60) as r:
                streamed.extend(r.iter_lines())

        t, _ = in_thread(stream)
        deadline = time.monotonic() + 30
        while not any(line.startswith(b"data: ") for line in streamed) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert t.is_alive(), "the stream ended before Ctrl+C"
        os.killpg(proc.pid, signal.SIGINT)  # as the terminal does: the bootloader and the server
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    t.join(10)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "ERROR" not in err, err
    assert err.rstrip().splitlines()[-1] == "llamapack: server stopped", err


def test_busy_port_given_explicitly_is_one_line_before_announcing() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = start_server("--port", str(port))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip() == (f"error: port {port} on 127.0.0.1 is already in use (another server?); "
                           "choose another with --port N, or leave --port out to take a free one")


def test_no_port_given_takes_the_next_free_one(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        monkeypatch.setattr(listen, "DEFAULT_PORT", port)
        sock = listen.bind("127.0.0.1", None)
        with sock:
            taken_port = sock.getsockname()[1]
            assert port < taken_port < port + listen.PORTS_TRIED
            assert listen.url_of(sock) == f"http://127.0.0.1:{taken_port}/"
    assert capsys.readouterr().err == f"llamapack: port {port} is in use (another server?); taking {taken_port}\n"
    with pytest.raises(listen.ServeError, match="not a port number"):
        listen.bind("127.0.0.1", 70000)

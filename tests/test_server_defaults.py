"""The server's defaults come from its command line (and a packed file's .args), as llama.cpp's
do: a request that does not set a field gets the command line's value on every route (OpenAI
chat and completions, TGI /generate and /generate_stream), /props reports them, and a request's
own value wins. The model id is the file's name; general.name is in /props.

The server runs in-process on the tiny fixture model (1 layer, ctx 512), whose greedy text repeats
one character: every answer takes milliseconds.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from serverutil import ServerThread, free_port, wait_up

from runtime.cli import build_parser, server_defaults
from runtime.engine import Engine

TINY = Path(__file__).parent / "fixtures/models/dense-tied-Q8_0.gguf"
CHAT = [{"role": "user", "content": "Say something."}]
TINY_EOS = 2  # the fixture's end-of-text token (tokenizer.ggml.eos_token_id)


def start(argv: list[str]) -> Iterator[ServerThread]:
    args = build_parser().parse_args(["-m", str(TINY), "--server", *argv])
    eng = Engine.load(TINY, n_ctx=512)
    with ServerThread(eng, defaults=server_defaults(args)) as srv:
        yield srv
    eng.close()


@pytest.fixture(scope="module")
def greedy() -> Iterator[ServerThread]:
    """`--temp 0 --seed 5 -n 7 --top-k 3 --repeat-last-n 8`, as if baked in .args."""
    yield from start(["--temp", "0", "--seed", "5", "-n", "7", "--top-k", "3", "--repeat-last-n", "8"])


@pytest.fixture(scope="module")
def seeded() -> Iterator[ServerThread]:
    yield from start(["--temp", "1.5", "--top-k", "0", "--min-p", "0", "--seed", "5"])


@pytest.fixture(scope="module")
def stopping() -> Iterator[ServerThread]:
    """The tiny model's greedy reply to CHAT is ", do4 do4 do4...": `-r "4 d"` ends it at ", do"."""
    yield from start(["--temp", "0", "-r", "4 d"])


def post(srv: ServerThread, route: str, body: dict) -> dict:
    r = requests.post(srv.url + route, json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def chat(srv: ServerThread, **fields) -> dict:
    return post(srv, "/v1/chat/completions", {"messages": CHAT, **fields})


def text(answer: dict) -> str:
    return answer["choices"][0]["message"]["content"]


def test_a_chat_without_temperature_is_greedy_and_takes_n(greedy: ServerThread) -> None:
    chat(greedy, max_tokens=1)  # the same cache state for both answers below
    plain = chat(greedy)
    explicit = chat(greedy, temperature=0, max_tokens=7, seed=5)
    assert text(plain) == text(explicit) and text(plain)
    assert plain["usage"]["completion_tokens"] == 7 and plain["choices"][0]["finish_reason"] == "length"
    own = chat(greedy, max_tokens=3)  # the request's own value wins
    assert own["usage"]["completion_tokens"] == 3


def test_completions_take_n_instead_of_16(greedy: ServerThread) -> None:
    answer = post(greedy, "/v1/completions", {"prompt": "Once upon a time"})
    assert answer["usage"]["completion_tokens"] == 7


def test_tgi_routes_take_the_command_line_over_their_own_defaults(greedy: ServerThread) -> None:
    answer = post(greedy, "/generate", {"inputs": "Once upon a time", "parameters": {"details": True}})
    assert answer["details"]["generated_tokens"] == 7  # not TGI's 100
    assert answer["details"]["seed"] == 5
    r = requests.post(greedy.url + "/generate_stream", json={"inputs": "Once upon a time"}, timeout=60)
    events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
    assert events[-1]["details"]["generated_tokens"] == 7
    assert events[-1]["generated_text"] == answer["generated_text"]
    own = post(greedy, "/generate", {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 2,
                                                                                  "details": True}})
    assert own["details"]["generated_tokens"] == 2


def test_props_reports_the_defaults_and_the_names(greedy: ServerThread) -> None:
    props = requests.get(greedy.url + "/props", timeout=10).json()
    params = props["default_generation_settings"]["params"]
    assert params["temperature"] == 0 and params["seed"] == 5 and params["n_predict"] == 7
    assert params["top_k"] == 3 and params["repeat_last_n"] == 8
    assert params["top_p"] == 0.95 and params["min_p"] == 0.05  # llama.cpp's, not given
    assert props["model_alias"] == TINY.name and props["model_name"] == "llamapack-tiny-dense-tied"
    models = requests.get(greedy.url + "/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [TINY.name]
    assert chat(greedy, max_tokens=1)["model"] == TINY.name


def test_the_seed_applies(seeded: ServerThread) -> None:
    chat(seeded, max_tokens=1)  # the same cache state for both answers below
    a = chat(seeded, max_tokens=24)
    b = chat(seeded, max_tokens=24, seed=5)
    assert text(a) == text(b)  # the same draws: the command line's seed
    c = chat(seeded, max_tokens=24, seed=6)
    assert text(c) != text(a)  # (and a seed matters at this temperature)
    params = requests.get(seeded.url + "/props", timeout=10).json()["default_generation_settings"]["params"]
    assert params["temperature"] == 1.5 and params["top_k"] == 0 and params["seed"] == 5


def test_tgi_samples_at_the_command_lines_temperature(seeded: ServerThread) -> None:
    """TGI decodes greedily unless asked to sample; a --temp given to the server asks for it,
    and a request's `do_sample: false` still wins."""
    def generate(**parameters) -> str:
        body = {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 16, **parameters}}
        return post(seeded, "/generate", body)["generated_text"]

    generate(max_new_tokens=1)  # the same cache state for all the answers below
    greedy = generate(do_sample=False)
    assert greedy == generate(temperature=0.01)  # TGI has no temperature 0: nearly greedy
    sampled = generate()
    assert sampled == generate(seed=5) and sampled != greedy


def test_the_stop_strings_apply(stopping: ServerThread) -> None:
    answer = chat(stopping, max_tokens=24)
    assert text(answer) == ", do" and answer["choices"][0]["finish_reason"] == "stop"
    own = chat(stopping, max_tokens=12, stop=["zz"])  # the request's own stop strings replace them
    assert text(own).startswith(", do4 do4") and own["choices"][0]["finish_reason"] == "length"
    tgi = post(stopping, "/generate", {"inputs": "[INST] Say something. [/INST]",
                                       "parameters": {"details": True, "max_new_tokens": 40}})
    # (TGI's answers keep the stop sequence)
    assert tgi["generated_text"] == ", do4 d" and tgi["details"]["finish_reason"] == "stop_sequence"
    params = requests.get(stopping.url + "/props", timeout=10).json()["default_generation_settings"]["params"]
    assert params["stop"] == ["4 d"]


YES_NO = 'root ::= "yes" | "no"'


@pytest.fixture(scope="module")
def constrained() -> Iterator[ServerThread]:
    """`--grammar` and `--ignore-eos`: every request's defaults, as llama.cpp's server takes them."""
    yield from start(["--temp", "0", "-n", "6", "--grammar", YES_NO, "--ignore-eos"])


def test_the_command_lines_grammar_constrains_requests_that_name_no_format(constrained: ServerThread) -> None:
    free = post(constrained, "/v1/chat/completions", {"messages": CHAT, "response_format": {"type": "text"}})
    assert text(free) not in ("yes", "no")  # the request's own format wins: the model's own text
    answers = [
        text(chat(constrained)),
        post(constrained, "/v1/completions", {"prompt": "Once upon a time"})["choices"][0]["text"],
        post(constrained, "/completion", {"prompt": "Once upon a time"})["content"],
        post(constrained, "/generate", {"inputs": "Once upon a time"})["generated_text"],
    ]
    assert all(a in ("yes", "no") for a in answers), answers
    own = post(constrained, "/completion", {"prompt": "Once upon a time", "grammar": 'root ::= "maybe"'})
    assert own["content"] == "maybe"
    params = requests.get(constrained.url + "/props", timeout=10).json()["default_generation_settings"]["params"]
    assert params["grammar"] == YES_NO and params["ignore_eos"] is True


def test_the_command_lines_json_schema_constrains_chat() -> None:
    from jsonschema import validate
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    for srv in start(["--temp", "0", "-n", "40", "-j", json.dumps(schema)]):
        validate(json.loads(text(chat(srv))), schema)


def test_the_command_lines_ignore_eos_applies_unless_a_request_says_otherwise(constrained: ServerThread) -> None:
    """A bias that makes the end-of-text token certain ends a generation at once; under --ignore-eos
    that token is never chosen, and the request runs to -n, unless it asks `ignore_eos: false`."""
    eos = TINY_EOS
    body = {"prompt": "Once upon a time", "grammar": "", "logit_bias": [[eos, 100.0]]}
    ignored = post(constrained, "/completion", body)
    assert ignored["tokens_predicted"] == 6 and ignored["stop_type"] == "limit"
    assert ignored["generation_settings"]["ignore_eos"] is True
    stopped = post(constrained, "/completion", {**body, "ignore_eos": False})
    assert stopped["stop_type"] == "eos" and stopped["content"] == ""
    chat_body = {"messages": CHAT, "response_format": {"type": "text"}, "logit_bias": {str(eos): 100}}
    assert post(constrained, "/v1/chat/completions", chat_body)["usage"]["completion_tokens"] == 6


# -- the whole path: .args in a packed file -> launcher -> command line -> server ----------------

def test_defaults_baked_in_args_reach_the_server(tmp_path: Path) -> None:
    """`packer build --args "--temp 0 -n 7"`: the packed file's server samples greedily and stops at
    7 tokens for requests that do not say otherwise, and /props (hence the web UI) shows it."""
    from packer.build import build
    from packer.runtime_build import build_runtime_once

    runtime = build_runtime_once()
    packed = build(TINY, tmp_path / "tiny.llamafile", runtime, args=["--temp", "0", "-n", "7", "--seed", "5"],
                   progress=False).output
    port = free_port()
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([str(packed), "--server", "--nobrowser", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc, log)
        params = requests.get(url + "/props", timeout=10).json()["default_generation_settings"]["params"]
        assert (params["temperature"], params["n_predict"], params["seed"]) == (0, 7, 5)
        r = requests.post(url + "/v1/chat/completions", json={"messages": CHAT}, timeout=60).json()
        assert r["usage"]["completion_tokens"] == 7 and r["model"] == "tiny.llamafile"
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""Terminal chat (runtime/chat_cli.py): the loop against a scripted engine, piped chat through a
packed file against the engine's own replies, and a person at a terminal (tmux): line editing
and history, /help, Ctrl-C stopping a reply without ending the program, /exit; the speed after
each reply, and the default cap on a reply's length.
"""
from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from packer.build import build
from runtime.chat_cli import run_chat
from runtime.cli import CHAT_MAX_TOKENS
from runtime.engine import Stats

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class FakeChunk:
    text: str
    finish_reason: str | None = None
    stats: Stats = field(default_factory=Stats)


class ScriptedEngine:
    """Replies "reply N" a few pieces at a time; records what each turn was asked."""

    def __init__(self, n_ctx: int = 4096, interrupt_turn: int | None = None, interrupt_piece: int = 2) -> None:
        self.n_ctx = n_ctx
        self.interrupt_turn = interrupt_turn
        self.interrupt_piece = interrupt_piece  # 0: while the prompt is read, before any text
        self.asked: list[list[dict[str, str]]] = []
        self.closed = 0

    def chat_prompt(self, messages):  # one token per character, plus 4 per message
        return [0] * sum(len(m["content"]) + 4 for m in messages)

    def stream_chat(self, messages, max_tokens=-1, params=None):
        self.asked.append([dict(m) for m in messages])
        self.max_tokens = max_tokens
        turn = len(self.asked)

        def gen():  # one token per piece, 10 ms each; a 20-token prompt in 10 ms
            stats = Stats(prompt_tokens=20, prompt_seconds=0.01)
            try:
                for i, piece in enumerate(["rep", "ly ", str(turn)]):
                    if turn == self.interrupt_turn and i == self.interrupt_piece:
                        raise KeyboardInterrupt
                    if 0 <= max_tokens <= i:
                        yield FakeChunk("", "length", stats)
                        return
                    stats.generated_tokens, stats.generation_seconds = i + 1, (i + 1) * 0.01
                    yield FakeChunk(piece, None, stats)
                yield FakeChunk("", "stop", stats)
            finally:
                self.closed += 1
        return gen()


def chat(engine, text: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run_chat(engine, inp=io.StringIO(text), out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_piped_turns_carry_the_conversation() -> None:
    eng = ScriptedEngine()
    rc, out, err = chat(eng, "Hello\n\nHow are you?\n")
    assert rc == 0 and out == "reply 1\nreply 2\n"
    assert err.splitlines() == ["[3 tokens, 100.0 tok/s | prompt 20 tokens, 2000.0 tok/s]"] * 2  # the speed
    assert eng.asked[1] == [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "reply 1"},
                            {"role": "user", "content": "How are you?"}]


def test_commands() -> None:
    eng = ScriptedEngine()
    rc, out, err = chat(eng, "one\n/help\n/clear\ntwo\n/exit\nthree\n")
    assert rc == 0 and out == "reply 1\nreply 2\n"
    assert "/clear" in err and "conversation cleared" in err
    assert eng.asked[1] == [{"role": "user", "content": "two"}]  # forgotten, and nothing after /exit


def test_an_unknown_command_is_not_sent() -> None:
    """/bogus is a mistyped command (as Ollama's chat says); with a space before it, or with more
    words, a line that starts with / is a message."""
    eng = ScriptedEngine()
    rc, out, err = chat(eng, "/bogus\n /usr\n/tmp is full, why?\n")
    assert rc == 0 and "unknown command /bogus" in err
    assert [a[-1]["content"] for a in eng.asked] == [" /usr", "/tmp is full, why?"]


def test_backslash_continues_a_line() -> None:
    eng = ScriptedEngine()
    chat(eng, "first line\\\nsecond line\n")
    assert eng.asked[0] == [{"role": "user", "content": "first line\nsecond line"}]


def test_ctrl_c_stops_the_reply_and_keeps_the_program() -> None:
    eng = ScriptedEngine(interrupt_turn=1)
    rc, out, err = chat(eng, "a\nb\n")
    assert rc == 0 and out == "reply \nreply 2\n" and "(stopped)" in err
    assert eng.asked[1][1] == {"role": "assistant", "content": "reply "}  # what was said stays
    assert eng.closed == 2


def test_ctrl_c_before_the_reply_began_takes_the_message_back() -> None:
    """Stopped while the message was read (a long paste): no reply, and the message is not left
    in the conversation for the next turn to read again."""
    eng = ScriptedEngine(interrupt_turn=1, interrupt_piece=0)
    rc, out, err = chat(eng, "a long message\nb\n")
    assert rc == 0 and out == "reply 2\n" and "(stopped before the reply began" in err
    assert eng.asked[1] == [{"role": "user", "content": "b"}]


def test_a_reply_cut_at_the_limit_says_so() -> None:
    eng = ScriptedEngine()
    out, err = io.StringIO(), io.StringIO()
    run_chat(eng, max_tokens=2, inp=io.StringIO("a\n"), out=out, err=err)
    assert out.getvalue() == "reply \n" and eng.max_tokens == 2
    assert err.getvalue().splitlines() == ["[2 tokens, 100.0 tok/s | prompt 20 tokens, 2000.0 tok/s] "
                                           "(cut at 2 tokens: -n sets the limit)"]


def test_old_exchanges_make_room() -> None:
    eng = ScriptedEngine(n_ctx=120)  # reserve: 30 tokens
    chat(eng, "x" * 30 + "\n" + "y" * 30 + "\n" + "z" * 30 + "\n")
    assert [m["content"][0] for m in eng.asked[2]] == ["y", "r", "z"]
    rc, out, err = chat(ScriptedEngine(n_ctx=120), "w" * 200 + "\nok\n")
    assert out == "reply 1\n" and "does not fit" in err


# -- the real thing ---------------------------------------------------------------------------

def long_context_copy(tmp_path: Path) -> Path:
    """The tiny fixture model (it repeats itself forever) with a training context of 4096, so a
    reply outgrows the chat's default cap before it fills the context."""
    data = bytearray((ROOT / "tests/fixtures/models/dense-tied-Q8_0.gguf").read_bytes())
    key = b"llama.context_length"
    at = data.index(key) + len(key)
    assert data[at:at + 4] == (4).to_bytes(4, "little")  # GGUF type uint32, then the value
    data[at + 4:at + 8] = (4096).to_bytes(4, "little")
    path = tmp_path / "tiny-4k.gguf"
    path.write_bytes(data)
    return path


def test_a_chat_reply_is_capped_unless_n_is_given(tmp_path: Path) -> None:
    """At temperature 0 the model never ends its reply: the chat stops it at CHAT_MAX_TOKENS, -n
    sets another limit; a line on stderr gives the speed and says why the reply ended."""
    model = long_context_copy(tmp_path)
    for args, limit in (([], CHAT_MAX_TOKENS), (["-n", "10"], 10), (["-n", "-1"], None)):
        r = subprocess.run([sys.executable, "-m", "runtime", "-m", str(model), "--chat", "--temp", "0", *args],
                           input="hi\n", capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        last = r.stderr.splitlines()[-1]
        n = limit or 4096 + 1 - int(re.search(r"prompt (\d+) tokens", last).group(1))  # the last is not run
        assert re.fullmatch(rf"\[{n} tokens, [\d.]+ tok/s \| prompt \d+ tokens, [\d.]+ tok/s\] \(cut.*\)", last), last
        assert ("-n sets the limit" if limit else "context of 4096 tokens is full") in last

@pytest.fixture(scope="module")
def smol_file(runtime_exe, smollm2_path, tmp_path_factory) -> Path:
    return build(smollm2_path, tmp_path_factory.mktemp("chat") / "smol.llamafile", runtime_exe, progress=False).output


def test_piped_chat_through_the_packed_file(smol_file, smollm2_path) -> None:
    from runtime.engine import Engine
    from runtime.sampling import SamplingParams

    questions = ["What is the capital of France?", "And of Italy?"]
    eng = Engine.load(smollm2_path)
    messages, expected = [], ""
    for q in questions:
        messages.append({"role": "user", "content": q})
        reply = "".join(c.text for c in eng.stream_chat(messages, max_tokens=24, params=SamplingParams(temp=0)))
        messages.append({"role": "assistant", "content": reply})
        expected += reply + "\n"
    eng.close()
    r = subprocess.run(["env", "-i", str(smol_file), "--chat", "--temp", "0", "-n", "24"],
                       input="\n".join(questions) + "\n", capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    assert "Traceback" not in r.stderr


class Tmux:
    """A terminal a test can type into and read, as a person would."""

    def __init__(self, command: str, home: Path) -> None:
        self.name = f"llamapack-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "160", "-y", "50",
                        f"env HOME={home} TERM=xterm {command}; echo EXITED $?; sleep 60"], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name, "-S", "-200"], capture_output=True,
                              text=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait(self, predicate, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"timed out; the terminal shows:\n{self.screen()}")

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def prompts(text: str) -> int:
    return sum(1 for line in text.splitlines() if line == ">" or line.startswith("> "))


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_person_at_the_terminal(smol_file, tmp_path) -> None:
    """No arguments on a terminal: chat. Type, read the reply, recall a line, interrupt, leave."""
    t = Tmux(f"{smol_file} --temp 0 -n 600", tmp_path)
    try:
        t.wait(lambda s: "/help for commands" in s and s.rstrip().endswith(">"))
        t.keys("Hi!", "Enter")
        s = t.wait(lambda s: prompts(s) >= 2)
        assert "Hello" in s
        t.keys("/help", "Enter")
        t.wait(lambda s: "/clear   forget the conversation" in s and prompts(s) >= 3)
        t.keys("Up", "Up")  # readline history: back to the question
        t.wait(lambda s: s.rstrip().splitlines()[-1] == "> Hi!")
        t.keys("C-u")
        # a reply that runs to the -n limit at temperature 0 (600 tokens), so Ctrl-C lands mid-reply
        t.keys("Write a 2000-word essay about the history of bread.", "Enter")
        t.wait(lambda s: len(s.split("the history of bread.")[-1].strip()) > 40)
        t.keys("C-c")
        s = t.wait(lambda s: "(stopped)" in s and s.rstrip().endswith(">"))
        assert "EXITED" not in s  # the program stays
        t.keys("/exit", "Enter")
        t.wait(lambda s: "EXITED 0" in s, timeout=30)
    finally:
        t.kill()
    assert "Hi!" in (tmp_path / ".llamapack_history").read_text().splitlines()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_output_to_a_file_ctrl_d_after_a_continued_line_and_sigterm_at_the_prompt(smol_file, tmp_path) -> None:
    """stdout to a file: the prompts stay on the terminal, the file has the replies alone; Ctrl-D
    on a continued line sends it (it quit, dropping the text); SIGTERM at the prompt leaves the
    terminal as it found it (it was left without echo and line mode)."""
    out = tmp_path / "replies.txt"
    t = Tmux(f"{smol_file} --temp 0 -n 8 > {out}; echo RC $?; stty -a | tr ' ;' '\\n\\n' | "
             "grep -E '^-?(echo|icanon)$' | tr '\\n' ' '; echo", tmp_path)
    try:
        t.wait(lambda s: "/help for commands" in s and s.rstrip().endswith(">"))
        t.keys("Say hi\\", "Enter")
        t.wait(lambda s: s.rstrip().endswith("."))
        t.keys("C-d")
        t.wait(lambda s: "tokens" in s and prompts(s) >= 2 and s.rstrip().endswith(">"))
        replies = out.read_text()
        assert replies.strip() and "> " not in replies and replies.count("\n") == 1, replies
        # the packed file's two processes (not the shell around them, whose command line names it)
        pids = subprocess.run(["pgrep", "-f", "^" + re.escape(str(smol_file))], capture_output=True,
                              text=True).stdout.split()
        assert pids
        subprocess.run(["kill", "-TERM", *pids])
        s = t.wait(lambda s: "RC " in s and "EXITED" in s, timeout=30)
        assert "RC 143" in s
        modes = s.split("RC 143")[1].split()
        assert "echo" in modes and "icanon" in modes and "-echo" not in modes and "-icanon" not in modes, s
    finally:
        t.kill()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_pasted_block_is_one_message(smol_file, tmp_path) -> None:
    """Three pasted lines were three turns (and the last one sat in the input): the line editor's
    bracketed paste makes them one message."""
    block = tmp_path / "paste.txt"
    block.write_text("Line one of a paste.\nLine two of a paste.\nSay OK.")
    t = Tmux(f"{smol_file} --temp 0 -n 8", tmp_path)
    try:
        t.wait(lambda s: "/help for commands" in s and s.rstrip().endswith(">"))
        subprocess.run(["tmux", "load-buffer", str(block)], check=True)
        subprocess.run(["tmux", "paste-buffer", "-p", "-t", t.name], check=True)
        t.wait(lambda s: "Say OK." in s)
        t.keys("Enter")
        s = t.wait(lambda s: "tokens" in s and s.rstrip().endswith(">"))
        replies = [line for line in s.splitlines() if line.startswith("[") and " tok/s" in line]
        assert len(replies) == 1 and prompts(s) == 2, s  # one reply, then the next prompt
    finally:
        t.kill()

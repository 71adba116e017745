"""Terminal chat: a multi-turn conversation rendered with the model's chat template.

On a terminal: a `> ` prompt with line editing and history (readline; a pasted block of several
lines is one message), the reply streamed as it comes, `/help /clear /exit`, a line ending in `\\` continues on the next one, Ctrl-C
stops the current reply (what was said stays in the conversation) and Ctrl-D quits.

Not on a terminal (`echo hi | model.llamafile --chat`): every input line is one user turn and
every reply goes to stdout followed by a newline (a reply keeps its own line breaks, so a reader
that needs one line per reply asks for it: -j, or a system prompt); notices go to stderr only.

After each reply a line on stderr gives its speed, as llama-cli does, and says why it ended
when that was not the model's own end of text (the reply token limit, `max_tokens`: the
command line's -n, else runtime.cli.CHAT_MAX_TOKENS; a full context).

The KV cache keeps the conversation: each turn evaluates only the new tokens
(Engine.stream_chat reuses the common prefix). When the conversation outgrows the context,
the oldest exchanges are dropped.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

HELP = """commands:
  /help    this help
  /clear   forget the conversation
  /exit    quit (Ctrl-D also quits)
a line ending in \\ continues on the next; Ctrl-C stops a reply; a message that is one
/word goes to the model only with a space before it"""
HISTORY_FILE = "~/.llamapack_history"
PROMPT, MORE = "> ", ". "


class _Terminal:
    """Reads user turns: input() with readline on a terminal, plain lines otherwise."""

    def __init__(self, inp: TextIO) -> None:
        self.inp = inp
        self.tty = inp.isatty()
        self.history = None
        if self.tty and inp is sys.stdin:
            try:
                import readline  # line editing and history for input()
            except ImportError:  # some builds lack it: input() still works
                return
            self.readline = readline
            try:  # a pasted block is one message, not a turn per line (Python turns it off)
                readline.parse_and_bind("set enable-bracketed-paste on")
            except Exception:  # noqa: BLE001 - a line editor without it
                pass
            home = os.environ.get("HOME")
            if home:
                self.history = os.path.join(home, os.path.basename(HISTORY_FILE))
                try:
                    readline.read_history_file(self.history)
                except OSError:
                    pass
                readline.set_history_length(1000)

    def read(self) -> str | None:
        """One user turn (continuation lines joined), or None at end of input."""
        lines: list[str] = []
        while True:
            try:
                line = self._input(MORE if lines else PROMPT) if self.tty and self.inp is sys.stdin \
                    else self.inp.readline()
            except EOFError:
                line = ""
                if self.tty:
                    print(file=sys.stderr)
                    # Ctrl-D after a continued line sends what was typed; at an empty prompt it quits
                    return "\n".join(lines) if lines else None
            if not self.tty:
                if line == "":
                    return "\n".join(lines) if lines else None
                line = line.rstrip("\r\n")
            if line.endswith("\\"):
                lines.append(line[:-1])
                continue
            lines.append(line)
            return "\n".join(lines)

    @staticmethod
    def _input(prompt: str) -> str:
        """input(), its prompt on the terminal: with stdout redirected (`> log`, `| tee`) the
        prompt goes to stderr, not into the file (and input() has no line editing then)."""
        if sys.stdout.isatty():
            return input(prompt)
        sys.stderr.write(prompt)
        sys.stderr.flush()
        return input()

    def close(self) -> None:
        if self.history:
            try:
                self.readline.write_history_file(self.history)
            except OSError:
                pass


def _fit(engine, messages: list[dict[str, str]], reserve: int) -> bool:
    """Drops the oldest exchanges until the prompt leaves `reserve` tokens; False if it can't."""
    while True:
        if len(engine.chat_prompt(messages)) + reserve <= engine.n_ctx:
            return True
        first = 1 if messages and messages[0]["role"] == "system" else 0
        if len(messages) - first <= 1:  # only the newest user turn is left and it does not fit
            return False
        del messages[first:first + 2]   # a user turn and its reply


def run_chat(engine, params=None, max_tokens: int = -1, system: str | None = None,
             inp: TextIO | None = None, out: TextIO | None = None, err: TextIO | None = None,
             constraint: Callable[[], Any] | None = None, stop: list[str] | None = None) -> int:
    """The chat loop over an Engine; returns the exit status. `system`: the conversation's system
    message; `constraint`: makes each reply's (a grammar, runtime/constraint.py), or None; `stop`:
    texts that end a reply (-r; the reply ends before them)."""
    inp, out, err = inp or sys.stdin, out or sys.stdout, err or sys.stderr
    term = _Terminal(inp)
    if term.tty:
        print("chat: /help for commands, Ctrl-D to quit", file=err)
    previous = _exit_on_hangup() if term.tty else {}
    try:
        return _loop(engine, term, system, params, max_tokens, out, err, constraint, stop)
    except _Hangup as e:  # the line editor has put the terminal back by now
        return 128 + e.signum
    finally:
        term.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Hangup(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def _exit_on_hangup() -> dict:
    """SIGTERM and SIGHUP end the chat through an exception, as Ctrl-C does: killed at the prompt
    by the default action, the process left the terminal without echo and line mode (readline's
    settings). Returns the handlers they had."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    said = []

    def hangup(signum, frame) -> None:
        if said:  # a second copy (`pkill` reaches the bootloader too, which forwards it): the first ends it
            return
        said.append(signum)
        raise _Hangup(signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.signal(signum, hangup)
    return previous


def _loop(engine, term: _Terminal, system: str | None, params, max_tokens: int, out: TextIO, err: TextIO,
          constraint: Callable[[], Any] | None = None, stop: list[str] | None = None) -> int:
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    reserve = min(256, engine.n_ctx // 4)  # room left for the reply
    while True:
        try:
            text = term.read()
        except KeyboardInterrupt:  # at the prompt: a fresh line, the program stays
            print("\n(/exit or Ctrl-D to quit)", file=err)
            continue
        if text is None:
            return 0
        command = text.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            return 0
        if command in ("/help", "/?"):
            print(HELP, file=err)
            continue
        if command == "/clear":
            messages = list(base)
            print("(conversation cleared)", file=err)
            continue
        if text == command and re.fullmatch(r"/\w+", command):  # a mistyped command, not a message
            print(f"(unknown command {command}: /help lists them)", file=err)
            continue
        messages.append({"role": "user", "content": text})
        if not _fit(engine, messages, reserve):
            messages.pop()
            print(f"(that message does not fit in the context of {engine.n_ctx} tokens)", file=err)
            continue
        reply, stopped, last = [], False, None
        shape: dict[str, Any] = {"constraint": constraint()} if constraint else {}  # each reply's own
        if stop:
            shape["stop"] = stop
        stream = engine.stream_chat(messages, max_tokens=max_tokens, params=params, **shape)
        try:
            for last in stream:
                if last.text:
                    reply.append(last.text)
                    out.write(last.text)
                    out.flush()
        except KeyboardInterrupt:  # Ctrl-C: stop this reply, keep the conversation
            stopped = True
        finally:
            stream.close()
        if stopped and last is None:  # while the message was read: as if it had not been sent
            messages.pop()
            print("(stopped before the reply began: the message is not in the conversation)", file=err)
            continue
        out.write("\n")
        out.flush()
        if last is not None:
            print(_summary(last, max_tokens, engine.n_ctx, stopped), file=err)
        messages.append({"role": "assistant", "content": "".join(reply)})


def _summary(last, max_tokens: int, n_ctx: int, stopped: bool) -> str:
    """The line after a reply: its speed and, unless the model ended it, why it ended."""
    s = last.stats
    line = f"[{s.generated_tokens} tokens, {s.generation_tps:.1f} tok/s | prompt {s.prompt_tokens} tokens, " \
           f"{s.prompt_tps:.1f} tok/s]"
    if stopped:
        return f"{line} (stopped)"
    if last.finish_reason == "length":
        if 0 <= max_tokens <= s.generated_tokens:
            return f"{line} (cut at {max_tokens} tokens: -n sets the limit)"
        return f"{line} (cut: the context of {n_ctx} tokens is full)"
    return line

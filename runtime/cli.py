"""Command line of the runtime, with llama.cpp's flag names.

    python -m runtime -m MODEL.gguf -p "Once upon a time" -n 64 --temp 0

Modes: -p/-f one-shot, --chat terminal chat (runtime/chat_cli.py), --server HTTP
server (runtime/server); a packed file's launcher (runtime/launcher.py) picks chat or
server when none is asked for. One-shot mode: stdout carries only the generated text,
streamed as it comes; the load summary and the timings go to stderr. Special tokens
written in -p are parsed, and BOS is added as the model's metadata says. User errors
end with one line on stderr and exit status 1, never a traceback.

argparse rather than click here: this module is on the start-up path of every
packed file, and the standard library costs nothing to import.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from runtime import __version__


class ArgsError(ValueError):
    """A bad command line, from a strict parser (used to check a packed file's .args)."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *a, strict: bool = False, **kw) -> None:
        super().__init__(*a, **kw)
        self.strict = strict

    def error(self, message: str):  # one line, as every user error here
        if self.strict:
            raise ArgsError(message)
        self.exit(2, f"error: {message} (--help for usage)\n")


def build_parser(strict: bool = False) -> argparse.ArgumentParser:
    p = _Parser(prog="llamapack", description="Run a GGUF language model on the CPU.", strict=strict)
    p.add_argument("--version", action="version", version=f"llamapack {__version__}")
    p.add_argument("-m", "--model", metavar="PATH", help="GGUF model file (or a packed file's weights)")
    p.add_argument("-p", "--prompt", metavar="TEXT", help="prompt to complete (one-shot mode)")
    p.add_argument("-f", "--file", metavar="PATH", help="read the prompt from a file")
    p.add_argument("--chat", action="store_true", help="terminal chat")
    p.add_argument("--server", action="store_true", help="HTTP server: web UI and OpenAI-compatible API")
    p.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="server port (default 8080, or the next free one)")
    p.add_argument("--nobrowser", action="store_true", help="do not open a browser on the web UI")
    p.add_argument("--api-key", metavar="KEY", help="server: require this bearer token")
    p.add_argument("--parallel", "-np", type=int, default=1, metavar="N", help="server: requests served at once")
    p.add_argument("-n", "--n-predict", type=int, default=-1, metavar="N",
                   help="tokens to generate (-1: until end of text or a full context)")
    p.add_argument("-c", "--ctx-size", type=int, default=4096, metavar="N",
                   help="context size (0: the model's training context)")
    p.add_argument("-t", "--threads", type=int, default=None, metavar="N", help="threads (default: all cores)")
    p.add_argument("--temp", type=float, default=0.8, help="temperature (0: greedy)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--repeat-last-n", type=int, default=64)
    p.add_argument("--presence-penalty", type=float, default=0.0)
    p.add_argument("--frequency-penalty", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=-1, help="random seed (-1: random)")
    p.add_argument("-r", "--reverse-prompt", action="append", default=[], metavar="TEXT",
                   help="stop when this text is generated (repeatable)")
    p.add_argument("--chat-template", metavar="NAME_OR_JINJA", help="override the model's chat template")
    p.add_argument("--no-display-prompt", action="store_true", help="accepted for llama.cpp compatibility")
    return p


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


def load_engine(args: argparse.Namespace, offset: int = 0):
    """The engine for args.model (a GGUF at `offset` in that file); the summary goes to stderr."""
    from runtime.engine import Engine

    eng = Engine.load(args.model, offset=offset, n_ctx=args.ctx_size if args.ctx_size > 0 else 1 << 30,
                      n_threads=args.threads, chat_template=args.chat_template)
    cfg = eng.model.config
    print(f"llamapack: {os.path.basename(args.model)}: {cfg.arch}, {cfg.n_layer} layers, "
          f"{cfg.n_embd} embd, vocab {cfg.n_vocab}, ctx {eng.n_ctx}, {eng.model.n_threads} threads",
          file=sys.stderr)
    return eng


def sampling_params(args: argparse.Namespace):
    from runtime.sampling import SamplingParams

    return SamplingParams(temp=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                          repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
                          presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                          seed=None if args.seed < 0 else args.seed)


def run_oneshot(args: argparse.Namespace, prompt: str, offset: int = 0) -> int:
    eng = load_engine(args, offset)
    out = sys.stdout
    last = None
    for chunk in eng.stream_generate(prompt, max_tokens=args.n_predict, stop=args.reverse_prompt,
                                     params=sampling_params(args), parse_special=True):
        if chunk.text:
            out.write(chunk.text)
            out.flush()
        last = chunk
    out.write("\n")
    out.flush()
    if last is not None:
        s = last.stats
        print(f"llamapack: prompt {s.prompt_tokens} tokens ({s.cached_tokens} cached) in "
              f"{s.prompt_seconds * 1000:.0f} ms, {s.prompt_tps:.1f} tok/s | generation "
              f"{s.generated_tokens} tokens in {s.generation_seconds * 1000:.0f} ms, "
              f"{s.generation_tps:.1f} tok/s | stop: {last.finish_reason}", file=sys.stderr)
    eng.close()
    return 0


def run_server(args: argparse.Namespace, offset: int, open_browser: bool) -> int:
    try:
        from runtime.server import serve
    except ImportError as e:
        if e.name not in ("runtime.server", None) and not str(e).startswith("cannot import name 'serve'"):
            raise
        return _fail("server mode is not available in this build")
    from runtime.server import bind

    sock = bind(args.host, args.port)  # first: a busy port is said before anything is announced
    eng = load_engine(args, offset)
    return serve(eng, api_key=args.api_key, parallel=args.parallel, open_browser=open_browser, sock=sock)


def run(args: argparse.Namespace, offset: int = 0, default_mode: str | None = None) -> int:
    """Runs the mode the flags ask for (-p/-f one-shot, --chat, --server), else default_mode
    ("chat", "server"); user errors end as one line on stderr and exit status 1."""
    from runtime.chat_template import ChatTemplateError
    from runtime.gguf import GGUFError
    from runtime.kernels import KernelError
    from runtime.model import ModelError
    from runtime.tokenizer import TokenizerError

    user_errors = (GGUFError, ModelError, KernelError, TokenizerError, ChatTemplateError, OSError)
    try:
        if not args.model:
            return _fail("no model given (-m PATH)")
        if not os.path.isfile(args.model):
            return _fail(f"model file not found: {args.model}")
        prompt = args.prompt
        if args.file:
            with open(args.file, encoding="utf-8") as fh:
                prompt = fh.read()
        if prompt is not None:
            return run_oneshot(args, prompt, offset)
        mode = "server" if args.server else "chat" if args.chat else default_mode
        if mode == "server":
            return run_server(args, offset, open_browser=not args.server and not args.nobrowser)
        if mode == "chat":
            from runtime.chat_cli import run_chat

            return run_chat(load_engine(args, offset), sampling_params(args), max_tokens=args.n_predict)
        return _fail("no prompt given (-p TEXT), nor --chat or --server")
    except BrokenPipeError:  # before OSError: `... | head` is not an error
        return 0
    except user_errors as e:
        return _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m runtime`: like a packed file's launcher, but no mode is the default."""
    from runtime.launcher import LauncherError, resolve_model

    args = build_parser().parse_args(argv)
    offset = 0
    if args.model and os.path.isfile(args.model):
        try:  # a plain GGUF, or the weights inside a packed file
            args.model, offset = resolve_model(args.model)
        except LauncherError as e:
            return _fail(str(e))
    return run(args, offset)

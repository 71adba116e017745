"""Command line of the runtime, with llama.cpp's flag names.

    python -m runtime -m MODEL.gguf -p "Once upon a time" -n 64 --temp 0

Modes: -p/-f one-shot, --chat terminal chat (runtime/chat_cli.py), --server HTTP
server (runtime/server); a packed file's launcher (runtime/launcher.py) picks chat or
server when none is asked for. One-shot mode: stdout carries only the generated text,
streamed as it comes; the load summary and the timings go to stderr. Special tokens
written in -p are parsed, and BOS is added as the model's metadata says. User errors
end with one line on stderr and exit status 1 (a bad flag value: argparse's status 2),
never a traceback. Sampling flags given (on the command line or in .args) are also the
server's defaults for requests that do not set them.

The flags themselves are runtime/flags.py's. Like it, this module is on the start-up path of every
packed file: the standard library only, until a model loads.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
from collections.abc import Sequence

from runtime.flags import (CHAT_MAX_TOKENS, DEFAULTS, MAX_PARALLEL, MAX_UBATCH, SAMPLING, ArgsError,  # noqa: F401
                           UsageError, build_parser, check_args, given, program_name)


def fail(msg: str) -> int:
    """A user error: one line on stderr (control characters from a file's names shown as escapes,
    not written to the terminal), exit status 1."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(msg))
    print(f"error: {shown}", file=sys.stderr)
    return 1


def load_engine(args: argparse.Namespace, offset: int = 0, n_seq: int = 1, max_batch: int = 512):
    """The engine for args.model (a GGUF at `offset` in that file) with a KV cache of n_seq
    sequences; the summary goes to stderr, with a note when -c or -t asked for more than the
    model or the machine has."""
    from runtime.engine import Engine
    from runtime.kernels import default_threads

    given(args)
    threads = args.threads if args.threads and args.threads > 0 else None
    cpus = default_threads()
    if threads and threads > cpus:
        # more threads than CPUs only wait on each other, and each has its own scratch buffers
        _note(f"-t {threads}: {_count(cpus, 'CPU')} here; using {_count(cpus, 'thread')}")
        threads = cpus
    eng = Engine.load(args.model, offset=offset, n_ctx=args.ctx_size if args.ctx_size > 0 else 1 << 30,
                      n_threads=threads, chat_template=args.chat_template, n_seq=n_seq, max_batch=max_batch,
                      use_mmap=not args.no_mmap)
    eng.context_shift, eng.n_keep = args.context_shift, args.keep
    eng.template_kwargs = dict(args.chat_template_kwargs)
    # What loading made (the vocabulary's lists of 50-150k entries) lives as long as the process:
    # out of the collector's reach, a full collection no longer walks it (Qwen's took 35 ms, a
    # stall of every stream, every few seconds of serving)
    gc.collect()
    gc.freeze()
    from runtime.speculative import SpecParams
    eng.speculation = SpecParams(draft_max=getattr(args, "draft_max", 8), draft_min=getattr(args, "draft_min", 0))
    cfg = eng.model.config
    if args.ctx_size > cfg.n_ctx_train and "ctx_size" in args.given:
        _note(f"-c {args.ctx_size} is above the model's training context; clamped to {eng.n_ctx}")
    print(f"llamapack: {os.path.basename(args.model)}: {cfg.arch}, {_count(cfg.n_layer, 'layer')}, "
          f"{cfg.n_embd} embd, vocab {cfg.n_vocab}, ctx {eng.n_ctx}, {_count(eng.model.n_threads, 'thread')}",
          file=sys.stderr)
    if eng.template.note:
        _note(eng.template.note)
    seqs = f" ({n_seq} sequences of {eng.n_ctx} positions)" if n_seq > 1 else ""
    print(f"llamapack: KV cache {_size(eng.model.kv_bytes)}{seqs}, scratch {_size(eng.model.scratch_bytes)}",
          file=sys.stderr)
    return eng


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def _size(n: int) -> str:
    """Bytes in MiB, or KiB below one (a small -c: not '0 MiB')."""
    return f"{n / 2**20:.0f} MiB" if n >= 1 << 20 else f"{max(1, round(n / 2**10))} KiB"


def _note(msg: str) -> None:
    print(f"llamapack: {msg}", file=sys.stderr)


def sampling_params(args: argparse.Namespace):
    from runtime.sampling import SamplingParams

    given(args)
    return SamplingParams(temp=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                          repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
                          presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                          seed=None if args.seed < 0 else args.seed)


def server_defaults(args: argparse.Namespace):
    """What a server request that leaves a field unset gets: the command line's values."""
    from runtime.server.params import Defaults

    return Defaults(sampling=sampling_params(args), given=frozenset(given(args) & set(SAMPLING)),
                    max_tokens=max(args.n_predict, -1) if "n_predict" in args.given else None,
                    stop=tuple(s for s in args.reverse_prompt if s),
                    template_kwargs=dict(args.chat_template_kwargs), reasoning_format=args.reasoning_format,
                    grammar=output_grammar(args), ignore_eos=bool(getattr(args, "ignore_eos", False)))


def stop_description(chunk, n_predict: int, n_ctx: int) -> str:
    """Why a generation ended, for the timing line: its last chunk said so."""
    if chunk.finish_reason == "stop":
        return f"stop string {json.dumps(chunk.stop_string)}" if chunk.stop_string else "end of text"
    if 0 <= n_predict <= chunk.stats.generated_tokens:
        return f"token limit (-n {n_predict})"
    return f"context full ({n_ctx} tokens)"


def process_escapes(text: str) -> str:
    """llama.cpp's escapes (-e, on by default): \\n \\r \\t \\' \\" \\\\ and \\xHH (a byte: several make
    a UTF-8 character); any other backslash stays as written."""
    if "\\" not in text:
        return text
    try:  # an argument's undecodable bytes come as surrogate escapes: back to those bytes
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    out, i = bytearray(), 0
    simple = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("'"): b"'", ord('"'): b'"', ord("\\"): b"\\"}
    while i < len(raw):
        c = raw[i]
        if c == ord("\\") and i + 1 < len(raw):
            e = raw[i + 1]
            if e in simple:
                out += simple[e]
                i += 2
                continue
            hex2 = raw[i + 2:i + 4]
            if e == ord("x") and len(hex2) == 2 and all(chr(h) in "0123456789abcdefABCDEF" for h in hex2):
                out.append(int(hex2, 16))
                i += 4
                continue
            out += raw[i:i + 2]
            i += 2
            continue
        out.append(c)
        i += 1
    return out.decode("utf-8", "replace")


def read_text_file(path: str, flag: str) -> str:
    """The text of the file a flag names (-f, --grammar-file...); UsageError with one line naming
    the flag and the file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise UsageError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{flag} {path}: is a directory, not a text file") from None
    except OSError as e:
        raise UsageError(f"{flag} {path}: {e.strerror or e}") from None
    if b"\0" in data:
        raise UsageError(f"{flag} {path}: a binary file (NUL byte at offset {data.index(0)}), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{flag} {path}: not UTF-8 text (bad byte at offset {e.start})") from None


def read_prompt_file(path: str) -> str:
    """The text of -f PATH, less one trailing newline (llama.cpp's -f)."""
    text = read_text_file(path, "-f")
    return text[:-1] if text.endswith("\n") else text


OUTPUT_FLAGS = (("--grammar", "grammar"), ("--grammar-file", "grammar_file"), ("--json-schema", "json_schema"),
                ("--json-schema-file", "json_schema_file"))


def output_grammar(args: argparse.Namespace) -> str | None:
    """The GBNF grammar the output must match (--grammar, --grammar-file, -j, -jf), or None; a
    UsageError naming the flag for a grammar or schema that cannot be used, or for two of them."""
    asked = [(flag, getattr(args, dest, None)) for flag, dest in OUTPUT_FLAGS]
    asked = [(flag, value) for flag, value in asked if value is not None]
    if not asked:
        return None
    if len(asked) > 1:
        raise UsageError(f"{asked[0][0]} and {asked[1][0]} both constrain the output: give one of them")
    from runtime.grammar.request import RequestError, request_grammar

    flag, value = asked[0]
    text = read_text_file(value, flag) if flag.endswith("-file") else value
    try:
        if "schema" not in flag:
            return request_grammar({"grammar": text})
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"{flag}: not JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
        return request_grammar({"json_schema": schema})
    except RequestError as e:  # its message names the API field: the flag instead
        said = str(e)
        field = f"'{e.param}': "
        raise UsageError(f"{flag}: {said[len(field):] if said.startswith(field) else said}") from None


def generation_params(args: argparse.Namespace, eng):
    """The sampling flags, and --ignore-eos as every end-of-generation token never chosen."""
    params = sampling_params(args)
    if getattr(args, "ignore_eos", False):
        import dataclasses

        eog = sorted(eng.tokenizer.eog_ids)
        params = dataclasses.replace(params, logit_bias=tuple((t, -math.inf) for t in eog))
    return params


def grammar_constraint(gbnf: str | None, eng):
    """A fresh constraint for one generation (the grammar's compiled tables are shared)."""
    if gbnf is None:
        return None
    from runtime.grammar import GrammarConstraint

    return GrammarConstraint(gbnf, eng.tokenizer)


def run_oneshot(args: argparse.Namespace, prompt: str, offset: int = 0, gbnf: str | None = None) -> int:
    """Completes the prompt (with -sys: answers it as a chat turn after the system message) on
    stdout; the timings on stderr, also after Ctrl-C (exit status 130)."""
    from runtime.speculative import stats_line

    eng = load_engine(args, offset)
    system = getattr(args, "system_prompt", None)
    ids = eng.chat_prompt([{"role": "system", "content": system}, {"role": "user", "content": prompt}]) \
        if system is not None else eng.tokenize(prompt, add_special=True, parse_special=True)
    # a -r text that ends it is printed, as llama.cpp's (its text is out before it is matched)
    state = eng.decoding(ids, args.n_predict, args.reverse_prompt, generation_params(args, eng),
                         grammar_constraint(gbnf, eng), keep_stop=True)
    out = sys.stdout
    last, status = None, 0
    try:
        for chunk in eng.stream_decoding(state):
            if chunk.text:
                out.write(chunk.text)
                out.flush()
            last = chunk
        stop = stop_description(last, args.n_predict, eng.n_ctx) if last is not None else ""
    except KeyboardInterrupt:  # Ctrl-C: what came so far, and its timings
        status, stop = 130, "interrupted (Ctrl-C)"
    out.write("\n")
    out.flush()
    s = state.stats
    if s.prompt_seconds > 0 or status == 0:
        print(f"llamapack: prompt {s.prompt_tokens} tokens ({s.cached_tokens} cached) in "
              f"{s.prompt_seconds * 1000:.0f} ms, {s.prompt_tps:.1f} tok/s | generation "
              f"{s.generated_tokens} tokens in {s.generation_seconds * 1000:.0f} ms, "
              f"{s.generation_tps:.1f} tok/s{stats_line(s)} | stop: {stop}", file=sys.stderr)
    eng.close()
    return status


def run_server(args: argparse.Namespace, offset: int, open_browser: bool) -> int:
    try:
        from runtime.server import serve
    except ImportError as e:
        if e.name not in ("runtime.server", None) and not str(e).startswith("cannot import name 'serve'"):
            raise
        return fail("server mode is not available in this build")
    from runtime.server import bind

    sock = bind(args.host, args.port)  # first: a busy port is said before anything is announced
    from runtime.server.scheduler import batch_rows

    eng = load_engine(args, offset, n_seq=args.parallel, max_batch=batch_rows(args.parallel, args.ubatch))
    return serve(eng, api_key=args.api_key, parallel=args.parallel, ubatch=args.ubatch, open_browser=open_browser,
                 sock=sock, defaults=server_defaults(args))


def run(args: argparse.Namespace, offset: int = 0, default_mode: str | None = None) -> int:
    """Runs the mode the flags ask for (-p/-f one-shot, --chat, --server), else default_mode
    ("chat", "server"); user errors end as one line on stderr and exit status 1."""
    from runtime.chat_template import ChatTemplateError
    from runtime.gguf import GGUFError
    from runtime.kernels import KernelError
    from runtime.model import ModelError
    from runtime.tokenizer import TokenizerError

    user_errors = (GGUFError, ModelError, KernelError, TokenizerError, ChatTemplateError, OSError, UsageError)
    given(args)
    try:
        if not args.model:
            return fail("no model given (-m PATH)")
        if not os.path.exists(args.model):
            return fail(f"model file not found: {args.model}")
        if not os.path.isfile(args.model):  # a directory, a FIFO, a device: nothing to map
            kind = "a directory" if os.path.isdir(args.model) else "not a regular file"
            return fail(f"model path is {kind}: {args.model}")
        last = getattr(args, "mode_from", None)  # the mode given last (None: none, or args built elsewhere)
        prompt = None  # (a --chat or --server after -p/-f: the prompt, its file unread, is not used)
        if last not in ("chat", "server"):
            source = getattr(args, "prompt_from", None) or ("file" if args.file else "prompt")
            prompt = read_prompt_file(args.file) if source == "file" and args.file else args.prompt
        gbnf = output_grammar(args)
        if getattr(args, "chat_template_file", None) is not None:
            if args.chat_template is not None:
                raise UsageError("--chat-template and --chat-template-file both set the template: give one of them")
            args.chat_template = read_text_file(args.chat_template_file, "--chat-template-file")
        if args.escape:  # as llama.cpp: the prompt, -p or -f, and the stop texts
            prompt = None if prompt is None else process_escapes(prompt)
            args.reverse_prompt = [process_escapes(r) for r in args.reverse_prompt]
        if prompt is not None:
            return run_oneshot(args, prompt, offset, gbnf)
        mode = last if last in ("chat", "server") else "server" if args.server else "chat" if args.chat \
            else default_mode
        if mode == "server":
            # (--grammar/-j and --ignore-eos are the requests' defaults: server_defaults)
            if getattr(args, "system_prompt", None):  # a request's messages hold its own
                _note("-sys: for one-shot and chat; a server request's messages carry its system message")
            return run_server(args, offset, open_browser=not args.server and not args.nobrowser)
        if mode == "chat":
            from runtime.chat_cli import run_chat

            limit = args.n_predict if "n_predict" in args.given else CHAT_MAX_TOKENS
            eng = load_engine(args, offset)
            return run_chat(eng, generation_params(args, eng), max_tokens=limit, stop=args.reverse_prompt,
                            system=getattr(args, "system_prompt", None),
                            constraint=(lambda: grammar_constraint(gbnf, eng)) if gbnf else None)
        return fail("no prompt given (-p TEXT), nor --chat or --server")
    except BrokenPipeError:  # before OSError: `... | head` is not an error
        return 0
    except user_errors as e:
        return fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except MemoryError as e:  # e.g. a context or slot count this machine cannot hold
        return fail(f"out of memory{': ' + str(e).splitlines()[0] if str(e) else ''}")
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def flushed(status: int) -> int:
    """The exit status once stdout's last bytes are out. A reader that left (`| head`) is no
    error, a full disk is one line (unless one was said); either way stdout goes to /dev/null, so
    that the interpreter's own flush at exit finds nothing to fail on (it printed 'Exception
    ignored ... BrokenPipeError' and made the status 120)."""
    try:
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        _drop_stdout()
        return status
    except OSError as e:
        _drop_stdout()
        return fail(f"cannot write the output: {e.strerror or e}") if status == 0 else status


def _drop_stdout() -> None:
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m runtime`: like a packed file's launcher, but no mode is the default."""
    from runtime.payload import PayloadError, resolve_model

    args = build_parser().parse_args(argv)
    offset = 0
    if args.model and os.path.isfile(args.model):
        try:  # a plain GGUF, or the weights inside a packed file
            args.model, offset = resolve_model(args.model)
        except PayloadError as e:
            return fail(str(e))
    return run(args, offset)

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

argparse rather than click here: this module is on the start-up path of every
packed file, and the standard library costs nothing to import.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence

from runtime import __version__


class ArgsError(ValueError):
    """A bad command line, from a strict parser (used to check a packed file's .args)."""


class UsageError(Exception):
    """A user error found by the command line itself (an unreadable -f file)."""


class _Parser(argparse.ArgumentParser):
    """llama.cpp's reading of a command line: a flag is its whole name (no abbreviations, no value
    joined to a short flag: `-ngl 99` is not `-n gl`, nor `-pps` a prompt "ps"), and the argument
    after a flag that takes one is its value, even when it starts with "-" (`-p "-x"`, `-r "---"`)."""

    def __init__(self, *a, strict: bool = False, **kw) -> None:
        super().__init__(*a, allow_abbrev=False, **kw)
        self.strict = strict

    def _get_option_tuples(self, option_string):
        return []  # only exact names (and NAME=VALUE), never a prefix of one

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        out, i = [], 0
        while i < len(args):
            a = args[i]
            action = self._option_string_actions.get(a)
            takes_value = action is not None and action.nargs is None and action.option_strings
            if a == "--":
                out += args[i:]
                break
            if takes_value and i + 1 < len(args) and args[i + 1].startswith("-"):
                out.append(f"{a}={args[i + 1]}")  # argparse would take "-x" for a flag
                i += 2
                continue
            out.append(a)
            i += 1
        return super().parse_known_args(out, namespace)

    def error(self, message: str):  # one line, as every user error here
        if self.strict:
            raise ArgsError(message)
        self.exit(2, f"error: {message} (--help for usage)\n")

    # Strict: --help and --version (however abbreviated) print and exit; stored in a packed file
    # they would be all it ever did.
    def exit(self, status: int = 0, message: str | None = None):
        if self.strict:
            raise ArgsError("--help and --version print and exit: a packed file would do nothing else")
        super().exit(status, message)

    def _print_message(self, message: str, file=None) -> None:
        if not self.strict:
            super()._print_message(message, file)


class _PromptSource(argparse.Action):
    """-p and -f: the one given last is the prompt (`prompt_from` names it), as llama.cpp reads them;
    one-shot mode unless --chat or --server comes after it (`mode_from`)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.prompt_from = namespace.mode_from = self.dest


class _Mode(argparse.Action):
    """--chat, --server: a flag; of the modes given (with -p, -f), the last one runs. A packed file's
    .args come before the command line's own (before `...`'s place), so a user's --chat runs the
    chat in a file whose .args say --server."""

    def __init__(self, option_strings, dest, **kw) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, True)
        namespace.mode_from = self.dest


# The defaults of the flags whose parsed default is None: None means "not given", so that
# the server can tell a default it was given (which applies to every request) from its own.
DEFAULTS = {"n_predict": -1, "ctx_size": 4096, "temp": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
            "repeat_penalty": 1.0, "repeat_last_n": 64, "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "seed": -1}
SAMPLING = ("temp", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
            "frequency_penalty", "seed")
CHAT_MAX_TOKENS = 1024   # a chat reply's cap when -n is not given: a looping model stops somewhere
MAX_PARALLEL = 64        # server slots: each holds a KV cache of the whole context
MAX_UBATCH = 8192        # rows of one forward step (its scratch grows with them)

DESCRIPTION = """\
Run a GGUF language model on the CPU: a one-shot completion (-p, -f), a terminal chat
(--chat), or a local web UI with an OpenAI-compatible API (--server).

With no mode, a packed file chats when its input is a terminal, and otherwise (double-clicked
in a file manager) starts the server and opens the web UI in a browser; `python -m runtime`
asks for a mode.

A packed file can carry default arguments in its .args entry (one per line, written with
`packer build --args "..."`). They come first and the command line's own follow, so the
command line wins; a line `...` in .args marks where the command line's arguments go.
Generation defaults given there or on the command line (--temp, -n, --seed, -r...) also
apply to every server request that does not set them, and the web UI starts from them."""


def _epilog(prog: str) -> str:
    if getattr(sys, "frozen", False):  # a packed file: as the user ran it (./name.llamafile), or found in PATH
        run = sys.argv[0] if os.sep in sys.argv[0] else prog
        chat = run
    else:
        run = f"{prog} -m model.gguf"
        chat = f"{run} --chat"
    return f"""examples:
  {chat}
      chat in the terminal (/exit or Ctrl-D to quit)
  {run} -p "Once upon a time" -n 64 --temp 0
      complete a prompt greedily, 64 tokens at most
  {run} --server --temp 0.2 -n 512 --nobrowser
      serve the API and the web UI; requests that do not set them sample at
      temperature 0.2 and stop after 512 tokens"""


def program_name() -> str:
    """The name the user ran: the packed file's own name, else `python -m runtime`."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if getattr(sys, "frozen", False):
        return argv0 or os.path.basename(sys.executable)
    return "python -m runtime" if argv0 in ("", "-c", "__main__.py") else argv0


# -- value checks: a bad value is argparse's one-line error, in .args too -----------------------

def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
            from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _ranged(kind: type, lo: float | None = None, hi: float | None = None):
    """An argparse type: a `kind` number within [lo, hi]."""
    def check(text: str) -> float:
        value = _number(text, kind)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else \
                f"at least {lo}" if lo is not None else f"at most {hi}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value
    return check


def _json_object(value: str) -> dict:
    """An argparse type: a JSON object."""
    try:
        data = json.loads(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e})") from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, {\"name\": value, ...}")
    return data


def _template_variables(value: str) -> dict:
    """--chat-template-kwargs: a JSON object of template variables (chat_template.check_variables)."""
    from runtime.chat_template import ChatTemplateError, check_variables

    data = _json_object(value)
    try:
        check_variables(data)
    except ChatTemplateError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return data


def _chat_template(value: str) -> str:
    """--chat-template: a built-in name or Jinja source (chat_template.check_override)."""
    from runtime.chat_template import ChatTemplateError, check_override

    try:
        return check_override(value)
    except ChatTemplateError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def check_args(stored: list[str]) -> None:
    """A packed file's .args lines (`...` marks where the user's go) parse as a command line;
    ArgsError with argparse's one-line reason otherwise. The launcher, `packer build --args`
    and `packer verify` all check them here."""
    build_parser(strict=True).parse_args([a for a in stored if a != "..."])


def build_parser(strict: bool = False, prog: str | None = None) -> argparse.ArgumentParser:
    prog = prog or program_name()
    top = _Parser(prog=prog, description=DESCRIPTION, epilog=_epilog(prog), strict=strict,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action="version", version=f"llamapack {__version__}")
    m = top.add_argument_group("modes")
    m.add_argument("-p", "--prompt", metavar="TEXT", action=_PromptSource, help="one-shot: complete TEXT; stdout "
                   "is only the generated text, the timings go to stderr (with -f too: the last one given)")
    m.add_argument("-f", "--file", metavar="PATH", action=_PromptSource, help="one-shot: read the prompt from a "
                   "UTF-8 text file (one trailing newline dropped, as llama.cpp does)")
    m.add_argument("-sys", "--system-prompt", metavar="TEXT",
                   help="a system message: the terminal chat starts with it, and a one-shot prompt becomes "
                        "a chat turn after it, rendered with the chat template (default: none)")
    m.add_argument("-e", "--escape", action=argparse.BooleanOptionalAction, default=True,
                   help="read \\n, \\r, \\t, \\', \\\", \\\\ and \\xHH in the prompt and the -r texts as "
                        "the characters they stand for (default: on, as llama.cpp)")
    m.add_argument("--chat", action=_Mode, help="terminal chat (/help inside it for its commands)")
    m.add_argument("--server", action=_Mode,
                   help="HTTP server: web UI and OpenAI-compatible API (no browser is opened)")
    g = top.add_argument_group("model")
    g.add_argument("-m", "--model", metavar="PATH",
                   help="GGUF model file, or a packed file to take the weights from (default: a packed "
                        "file's own weights)")
    g.add_argument("-c", "--ctx-size", type=_ranged(int, lo=0), default=None, metavar="N",
                   help=f"context size in tokens (default: {DEFAULTS['ctx_size']}; 0: the model's training "
                        "context; above it: clamped to it)")
    g.add_argument("-t", "--threads", type=_ranged(int), default=None, metavar="N",
                   help="threads (default and N <= 0: all CPUs; above the CPU count: clamped to it)")
    g.add_argument("-ngl", "--gpu-layers", "--n-gpu-layers", metavar="N", default=None,
                   help="accepted for llama.cpp compatibility: everything runs on the CPU (default: none)")
    g.add_argument("--no-mmap", action="store_true",
                   help="read the weights into memory instead of mapping them from the file: they take "
                        "their size in RAM and a read at start-up, and generation can run faster (in a "
                        "virtual machine, up to 30%%)")
    g.add_argument("--chat-template", metavar="NAME_OR_JINJA", type=_chat_template,
                   help="override the model's chat template (default: the model's own)")
    g.add_argument("--chat-template-file", metavar="PATH",
                   help="override it with the Jinja template in a file (default: none)")
    g.add_argument("--chat-template-kwargs", metavar="JSON", type=_template_variables, default={},
                   help="extra variables for the chat template, a JSON object: e.g. "
                        "'{\"enable_thinking\": false}' turns Qwen 3's thinking off (a server request's "
                        "chat_template_kwargs adds to them; default: none)")
    g.add_argument("--reasoning-format", choices=("auto", "deepseek", "deepseek-legacy", "none"), default="auto",
                   help="the server's chat replies: a <think> block at the start goes to reasoning_content "
                        "(auto, deepseek), to both it and the content (deepseek-legacy), or stays in the "
                        "content (none); a request's reasoning_format wins (default: auto)")
    g.add_argument("--no-display-prompt", action="store_true", help="accepted for llama.cpp compatibility")
    g.add_argument("--context-shift", action=argparse.BooleanOptionalAction, default=False,
                   help="when the context is full, drop half of what follows the first --keep tokens and "
                        "go on (default: generation ends)")
    g.add_argument("--keep", type=_ranged(int, lo=-1), default=0, metavar="N",
                   help="tokens of the prompt a context shift keeps (default 0, -1: all; plus the BOS)")
    g.add_argument("--draft-max", "--spec-draft-n-max", type=_ranged(int, 0, 15), default=8, metavar="N",
                   help="speculative decoding: at most N draft tokens per step, looked up in the prompt and "
                        "the text so far and verified in one pass; drafted only while they are accepted "
                        "often enough to pay (default: 8; 0: off)")
    g.add_argument("--draft-min", "--spec-draft-n-min", type=_ranged(int, 0, 15), default=0, metavar="N",
                   help="speculative decoding: verify no draft shorter than N tokens (default: 0)")
    _add_sampling(top.add_argument_group("generation (also the server's defaults)"))
    _add_output(top.add_argument_group("output (one-shot and chat; a server request sets its own)"))
    p = top.add_argument_group("server")
    p.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    p.add_argument("--port", type=_ranged(int, 0, 65535), default=None, help="server port (default 8080, or the next free one)")
    p.add_argument("--nobrowser", action="store_true", help="do not open a browser on the web UI")
    p.add_argument("--api-key", metavar="KEY", help="require `Authorization: Bearer KEY` (default: none)")
    p.add_argument("--parallel", "-np", type=_ranged(int, 1, MAX_PARALLEL), default=1, metavar="N",
                   help="requests decoded at once, in one batch; each has its own KV cache of -c "
                        "positions (default: 1)")
    p.add_argument("--ubatch", "-ub", type=_ranged(int, 1, MAX_UBATCH), default=512, metavar="N",
                   help="rows per forward step: a long prompt is processed N tokens at a time between "
                        "the other requests' tokens, fewer deeper into it, each chunk costing no more than "
                        "the first (default: 512)")
    return top


def _add_sampling(s) -> None:
    d = DEFAULTS
    s.add_argument("-n", "--n-predict", "--predict", type=_ranged(int, -2, (1 << 31) - 1), default=None, metavar="N",
                   help=f"tokens to generate (default: {d['n_predict']}: until the end of text, or a full "
                        f"context unless --context-shift; -2: until the context is full, shifted or not; a "
                        f"chat reply stops at {CHAT_MAX_TOKENS} unless -n is given)")
    s.add_argument("--temp", type=_ranged(float), default=None, metavar="T",
                   help=f"temperature (default: {d['temp']}; <= 0: greedy)")
    s.add_argument("--top-k", type=_ranged(int, -(1 << 31), (1 << 31) - 1), default=None, metavar="K",
                   help=f"keep the K most likely tokens (default: {d['top_k']}; <= 0: all)")
    s.add_argument("--top-p", type=_ranged(float, 0.0, 1.0), default=None, metavar="P",
                   help=f"nucleus sampling (default: {d['top_p']}; 1: off)")
    s.add_argument("--min-p", type=_ranged(float, 0.0, 1.0), default=None, metavar="P",
                   help=f"drop tokens below P times the top one's probability (default: {d['min_p']}; 0: off)")
    s.add_argument("--repeat-penalty", type=_ranged(float, 0.0), default=None, metavar="X",
                   help=f"penalize repeated tokens (default: {d['repeat_penalty']}; 1: off)")
    s.add_argument("--repeat-last-n", type=_ranged(int, -1, (1 << 31) - 1), default=None, metavar="N",
                   help=f"tokens the penalties look back at (default: {d['repeat_last_n']}; 0: off, "
                        "-1: the whole context)")
    s.add_argument("--presence-penalty", type=_ranged(float), default=None, metavar="X",
                   help=f"presence penalty (default: {d['presence_penalty']}: off)")
    s.add_argument("--frequency-penalty", type=_ranged(float), default=None, metavar="X",
                   help=f"frequency penalty (default: {d['frequency_penalty']}: off)")
    s.add_argument("-s", "--seed", type=_ranged(int, -1, (1 << 64) - 1), default=None, metavar="N",
                   help=f"random seed (default: {d['seed']}: a random one)")
    s.add_argument("-r", "--reverse-prompt", action="append", default=[], metavar="TEXT",
                   help="stop when TEXT is generated (repeatable; default: none)")


def _add_output(o) -> None:
    o.add_argument("--ignore-eos", action="store_true",
                   help="never choose an end-of-generation token: generate until -n, a stop text or a full "
                        "context (default: off)")
    o.add_argument("--grammar", metavar="GBNF", help="constrain the output to a GBNF grammar (llama.cpp's format; default: none)")
    o.add_argument("--grammar-file", metavar="PATH", help="the same, the grammar read from a file (default: none)")
    o.add_argument("-j", "--json-schema", metavar="SCHEMA",
                   help="constrain the output to JSON that a JSON Schema accepts ('{}': any JSON value; default: none)")
    o.add_argument("-jf", "--json-schema-file", metavar="PATH", help="the same, the schema read from a file (default: none)")


def given(args: argparse.Namespace) -> set[str]:
    """The flags of DEFAULTS set on the command line or in .args; fills in the others' defaults.
    (Idempotent: run() calls it, and so may a caller that built args itself.)"""
    if not hasattr(args, "given"):
        args.given = {k for k in DEFAULTS if getattr(args, k, None) is not None}
        for k, v in DEFAULTS.items():
            if getattr(args, k, None) is None:
                setattr(args, k, v)
    return args.given


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
                    template_kwargs=dict(args.chat_template_kwargs), reasoning_format=args.reasoning_format)


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
    given = [(flag, getattr(args, dest, None)) for flag, dest in OUTPUT_FLAGS]
    given = [(flag, value) for flag, value in given if value is not None]
    if not given:
        return None
    if len(given) > 1:
        raise UsageError(f"{given[0][0]} and {given[1][0]} both constrain the output: give one of them")
    from runtime.grammar.request import RequestError, request_grammar

    flag, value = given[0]
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
            unused = [flag for flag, on in (("--grammar/-j", gbnf), ("--ignore-eos", getattr(args, "ignore_eos", 0)),
                                            ("-sys", getattr(args, "system_prompt", None))) if on]
            if unused:  # a request sets its own: response_format, grammar, ignore_eos, a system message
                _note(f"{', '.join(unused)}: for one-shot and chat; a server request sets its own")
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

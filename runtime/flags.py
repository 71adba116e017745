"""The runtime's flags, with llama.cpp's names and llama.cpp's reading of a command line (whole
names, a value after its flag whatever it looks like): the parser, its defaults and checks, and
check_args for a packed file's .args. runtime/cli.py runs what they ask for.

argparse rather than click here: this module is on the start-up path of every packed file, and the
standard library costs nothing to import.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

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
    _add_output(top.add_argument_group("output (also the server's defaults: a request's own format wins)"))
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

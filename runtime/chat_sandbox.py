"""The sandbox chat templates run in: jinja2's immutable sandbox, bounded in time, size and memory.

A chat template is code from whoever made the GGUF. jinja2's sandbox keeps it away from Python's
internals and caps `range()` at 100,000 items, but an endless loop, `'a' * 10**9` (which jinja2
even computes while compiling, as a constant) or a doubling loop would still hold a server forever
or take gigabytes. Here:

- time: a trace function (`sys.settrace`, only in the rendering thread, only while rendering)
  stops the render after `Limits.seconds` of the thread's CPU time (not the wall clock: a busy
  machine, or an emulated one, must not fail a template that is merely slow to get the CPU); it sees every line of template code and every Python
  call, so no template loop escapes it;
- size: operators that make big objects (`*`, `+`, `%`, `**`, `~`), string methods and filters
  with a width or count (`center`, `replace`, `join`, `indent`, `format`, ...), the printed values
  and block captures are checked before they run: nothing above `Limits.size` characters (or
  items), no integer above `MAX_INT_BITS` bits; intercepted operators are not folded at compile
  time, so the checks hold there too;
- memory: as a last resort the process's anonymous resident memory may not grow by more than
  `Limits.memory` bytes during one render (Linux; checked every few hundred steps).

Exceeding a limit raises: `SecurityError` for a refused operation, `RenderAborted` for time and
memory; chat_template.py turns both into a one-line ChatTemplateError.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from typing import Any, Callable

from jinja2 import pass_environment, pass_eval_context
from jinja2.compiler import CodeGenerator
from jinja2.filters import make_attrgetter
from jinja2.runtime import markup_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter, SecurityError
from markupsafe import Markup

MAX_INT_BITS = 1 << 16      # integers a template makes: 65536 bits (~20,000 digits)
_CHECK_EVERY = 512          # trace events between two memory checks
_CLOCK_EVERY = 64           # trace events between two readings of the thread's CPU time (a system call)
_CHECK_BYTES = 64 << 20     # or this many characters made since the last check


@dataclass(frozen=True)
class Limits:
    seconds: float = 5.0      # one render (or one compile)
    size: int = 1 << 24       # characters or items of one string/list, and of the output (16 Mi)
    memory: int = 1 << 30     # anonymous memory one render may add (1 GiB)

    @property
    def printed(self) -> int:  # everything `{{ }}` prints in one render, block captures included
        return 4 * self.size


class RenderAborted(BaseException):
    """Time or memory ran out. A BaseException, so that no `except Exception` in jinja2's
    runtime swallows it (raising from a trace function also turns the tracing off)."""


def _anon_rss() -> int | None:
    """Resident anonymous memory in bytes (mapped model weights excluded), None where unknown."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _Watch:
    """The budget of one render in one thread."""

    def __init__(self, limits: Limits, memory: bool = True) -> None:
        self.limits = limits
        self.deadline = time.thread_time() + limits.seconds
        self.events = 0
        self.made = 0       # characters made since the last memory check
        self.printed = 0
        self.rss0 = _anon_rss() if memory else None

    def tick(self) -> None:
        self.events += 1
        if self.events % _CLOCK_EVERY == 0 and time.thread_time() > self.deadline:
            raise RenderAborted(f"rendering took longer than {self.limits.seconds:g} s of CPU time (an endless loop?)")
        if self.events % _CHECK_EVERY == 0:
            self.check_memory()

    def check_memory(self) -> None:
        self.made = 0
        if self.rss0 is not None:
            now = _anon_rss()
            if now is not None and now - self.rss0 > self.limits.memory:
                raise RenderAborted(f"rendering used more than {self.limits.memory >> 20} MiB of memory")

    def make(self, n: int, what: str) -> None:
        """`n` characters or items are about to be made by `what`."""
        if n > self.limits.size:
            raise SecurityError(f"{what} would make {n} characters or items, over the limit of {self.limits.size}")
        self.made += n
        if self.made > _CHECK_BYTES:
            self.check_memory()

    def print(self, n: int) -> None:
        self.printed += n
        if self.printed > self.limits.printed:
            raise SecurityError(f"the template printed more than {self.limits.printed} characters")


_local = threading.local()


def _watch() -> _Watch:
    """The current render's budget; outside a render (compile-time folding) a fresh default one."""
    w = getattr(_local, "watch", None)
    return w if w is not None else _Watch(Limits(), memory=False)


@contextmanager
def bounded(limits: Limits) -> Iterator[_Watch]:
    """Runs the body (a compile or a render) under `limits`, in this thread."""
    watch = _Watch(limits)

    def local_trace(frame: Any, event: str, arg: Any) -> Any:
        watch.tick()
        return local_trace

    def global_trace(frame: Any, event: str, arg: Any) -> Any:
        watch.tick()
        # line events only in template code (its loops); other frames are seen at each call
        return local_trace if frame.f_code.co_filename == "<template>" else None

    outer, previous = getattr(_local, "watch", None), sys.gettrace()
    _local.watch = watch
    sys.settrace(global_trace)
    try:
        yield watch
    finally:
        sys.settrace(previous)
        _local.watch = outer


# -- size checks ---------------------------------------------------------------------------------

_SEQUENCES = (str, bytes, list, tuple)


def _length(x: Any) -> int:
    return len(x) if isinstance(x, (*_SEQUENCES, dict)) else 24  # anything else prints short


def _check_int(n: Any, what: str) -> None:
    if isinstance(n, int) and n.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"{what} would make an integer of more than {MAX_INT_BITS} bits")


_PRINTF_SPEC = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(fmt: str, values: Any, what: str) -> None:
    """`fmt % values`: the widths and precisions written in `fmt` or passed for `*`."""
    args = list(values.values()) if isinstance(values, dict) else \
        list(values) if isinstance(values, tuple) else [values]
    n = len(fmt) + sum(_length(a) for a in args)
    for width, precision in _PRINTF_SPEC.findall(fmt):
        for spec in (width, precision):
            if spec.isdigit():
                n += int(spec)
    if "*" in fmt:
        n += sum(abs(a) for a in args if isinstance(a, int))
    _watch().make(n, f"{what} formatting")


def check_binop(op: str, left: Any, right: Any) -> None:
    watch = _watch()
    if op == "*":
        seq, count = (left, right) if isinstance(left, _SEQUENCES) else (right, left)
        if isinstance(seq, _SEQUENCES) and isinstance(count, int):
            watch.make(len(seq) * max(count, 0), f"{type(seq).__name__} * {count}")
        elif isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise SecurityError(f"'*' would make an integer of more than {MAX_INT_BITS} bits")
    elif op == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        watch.make(len(left) + len(right), "'+'")
    elif op == "%" and isinstance(left, (str, bytes)):
        _check_printf(str(left), right, "'%'")
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if left.bit_length() * right > MAX_INT_BITS:
            raise SecurityError(f"'**' would make an integer of more than {MAX_INT_BITS} bits")


def check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """A call of a method of a built-in value (`'a'.center(10**9)`, `s.replace('', t)`); returns
    the arguments to call with (an iterable given to `join` is read once, here)."""
    owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    if not isinstance(owner, (*_SEQUENCES, dict, int)):
        return args
    watch = _watch()
    what = f"{type(owner).__name__}.{name}()"
    for a in (*args, *kwargs.values()):  # widths, counts, lengths: center, ljust, zfill, to_bytes ...
        if isinstance(a, int) and abs(a) > watch.limits.size:
            raise SecurityError(f"{what} was given {a}, over the limit of {watch.limits.size}")
    if isinstance(owner, (str, bytes)):
        if name == "join" and args:
            items = list(args[0])
            watch.make(sum(_length(x) for x in items) + len(owner) * max(len(items) - 1, 0), what)
            return (items, *args[1:])
        if name == "replace" and len(args) >= 2 and isinstance(args[0], type(owner)):
            old, new = args[0], args[1]
            hits = owner.count(old) if old else len(owner) + 1
            if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
                hits = min(hits, args[2])
            watch.make(len(owner) + hits * max(_length(new) - len(old), 0), what)
        elif name == "expandtabs":
            tab = args[0] if args else kwargs.get("tabsize", 8)
            watch.make(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * max(tab, 0), what)
        elif name == "translate" and args and isinstance(args[0], dict):
            longest = max((_length(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
            watch.make(len(owner) * longest, what)
    return args


class _BoundedFormatter(SandboxedFormatter):
    """`str.format` in the sandbox, with each field's width and precision checked."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in re.findall(r"\d+", format_spec):
            _watch().make(int(number), "str.format()")
        return super().format_field(value, format_spec)


# -- bounded filters and globals -------------------------------------------------------------------

def _bounded_filters(filters: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """jinja2's filters that take a width, a count or a joiner, each with its size checked first."""
    f = dict(filters)
    center, indent, batch, slice_, fmt = f["center"], f["indent"], f["batch"], f["slice"], f["format"]
    replace, join, wordwrap = f["replace"], f["join"], f["wordwrap"]

    @wraps(center)
    def do_center(value: Any, width: int = 80) -> Any:
        _watch().make(max(_length(value), width if isinstance(width, int) else 0), "center")
        return center(value, width)

    @wraps(indent)
    def do_indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> Any:
        step = width if isinstance(width, int) else _length(width)
        _watch().make(_length(s) + (str(s).count("\n") + 1) * max(step, 0), "indent")
        return indent(s, width, first, blank)

    @wraps(batch)
    def do_batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        _watch().make(linecount if isinstance(linecount, int) else 0, "batch")
        return batch(value, linecount, fill_with)

    @wraps(slice_)
    def do_slice(value: Any, slices: int, fill_with: Any = None) -> Any:
        _watch().make(slices if isinstance(slices, int) else 0, "slice")
        return slice_(value, slices, fill_with)

    @wraps(fmt)
    def do_format(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_printf(str(value), kwargs or args, "format")
        return fmt(value, *args, **kwargs)

    @pass_eval_context
    def do_replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> Any:
        text = str(s)
        hits = text.count(str(old)) if str(old) else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        _watch().make(len(text) + hits * max(len(str(new)) - len(str(old)), 0), "replace")
        return replace(eval_ctx, s, old, new, count)

    @pass_eval_context
    def do_join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = list(value)
        parts = map(make_attrgetter(eval_ctx.environment, attribute), items) if attribute is not None else items
        _watch().make(sum(_length(x) for x in parts) + _length(d) * max(len(items) - 1, 0), "join")
        return join(eval_ctx, items, d, attribute)

    @pass_environment
    def do_wordwrap(environment: Any, s: Any, width: int = 79, break_long_words: bool = True,
                    wrapstring: Any = None, break_on_hyphens: bool = True) -> Any:
        breaks = _length(s) // max(width, 1) + str(s).count("\n") + 1 if isinstance(width, int) else 1
        _watch().make(_length(s) + breaks * _length(wrapstring or "\n"), "wordwrap")
        return wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)

    f.update(center=do_center, indent=do_indent, batch=do_batch, slice=do_slice, format=do_format,
             replace=do_replace, join=do_join, wordwrap=do_wordwrap)
    f["sum"] = _numbers_only(f["sum"])
    return f


def _numbers_only(sum_: Callable[..., Any]) -> Callable[..., Any]:
    @pass_environment
    def do_sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        # sum() adding lists or strings copies quadratically, inside one C call: numbers only
        if not isinstance(start, (int, float)):
            raise SecurityError("sum() adds numbers only here")
        return sum_(environment, iterable, attribute, start)

    return do_sum


def _lipsum(lipsum: Callable[..., str]) -> Callable[..., str]:
    def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        _watch().make(n * max if isinstance(n, int) and isinstance(max, int) else 0, "lipsum")
        return lipsum(n, html, min, max)

    return bounded_lipsum


# -- the environment ---------------------------------------------------------------------------------

class _CodeGenerator(CodeGenerator):
    """Compiles `a ~ b` to a checked join (jinja2 joins it inline, out of the sandbox's reach)."""

    def visit_Concat(self, node: Any, frame: Any) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's ImmutableSandboxedEnvironment with the limits above."""

    intercepted_binops = frozenset({"*", "+", "%", "**"})
    code_generator_class = _CodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._printed, **options)
        self.filters = _bounded_filters(self.filters)
        self.globals["lipsum"] = _lipsum(self.globals["lipsum"])

    @staticmethod
    def _printed(value: Any) -> Any:
        """Every `{{ value }}`, before it is written out or captured."""
        watch = _watch()
        watch.make(_length(value), "a printed value")
        watch.print(_length(value))
        return value

    def concat(self, pieces: Any) -> str:  # type: ignore[override]  # block captures, macro output
        pieces = list(pieces)
        _watch().make(sum(_length(p) for p in pieces), "a block")
        return "".join(pieces)

    def checked_concat(self, values: tuple[Any, ...]) -> str:
        if any(isinstance(v, Markup) for v in values):
            return markup_join(values)  # type: ignore[no-any-return]
        texts = [str(v) for v in values]
        _watch().make(sum(len(t) for t in texts), "'~'")
        return "".join(texts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        args = check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` / `str.format_map` with the field widths checked (jinja2's own wrapper
        with a bounded formatter)."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None or isinstance(value.__self__, Markup):
            return wrapped
        text, is_map = value.__self__, value.__name__ == "format_map"
        formatter = _BoundedFormatter(self)

        def bounded(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return str(formatter.vformat(text, args, kwargs))

        return bounded

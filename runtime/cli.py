"""Command line of the runtime, with llama.cpp's flag names.

    python -m runtime -m MODEL.gguf -p "Once upon a time" -n 64 --temp 0

One-shot mode: stdout carries only the generated text, streamed as it comes; the
load summary and the timings go to stderr. Special tokens written in -p are
parsed, and BOS is added as the model's metadata says. User errors end with one
line on stderr and exit status 1, never a traceback.

argparse rather than click here: this module is on the start-up path of every
packed file, and the standard library costs nothing to import.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from runtime import __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llamapack", description="Run a GGUF language model on the CPU.")
    p.add_argument("--version", action="version", version=f"llamapack {__version__}")
    p.add_argument("-m", "--model", metavar="PATH", help="GGUF model file")
    p.add_argument("-p", "--prompt", metavar="TEXT", help="prompt to complete (one-shot mode)")
    p.add_argument("-f", "--file", metavar="PATH", help="read the prompt from a file")
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


def run_oneshot(args: argparse.Namespace, prompt: str) -> int:
    from runtime.engine import Engine, SamplingParams

    eng = Engine.load(args.model, n_ctx=args.ctx_size if args.ctx_size > 0 else 1 << 30,
                      n_threads=args.threads, chat_template=args.chat_template)
    cfg = eng.model.config
    print(f"llamapack: {os.path.basename(args.model)}: {cfg.arch}, {cfg.n_layer} layers, "
          f"{cfg.n_embd} embd, vocab {cfg.n_vocab}, ctx {eng.n_ctx}, {eng.model.n_threads} threads",
          file=sys.stderr)
    params = SamplingParams(temp=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                            repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
                            presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                            seed=None if args.seed < 0 else args.seed)
    out = sys.stdout
    last = None
    for chunk in eng.stream_generate(prompt, max_tokens=args.n_predict, stop=args.reverse_prompt,
                                     params=params, parse_special=True):
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        if prompt is None:
            return _fail("no prompt given (-p TEXT); chat and server modes come with the single-file launcher")
        return run_oneshot(args, prompt)
    except user_errors as e:
        return _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0

"""`packer`: build, inspect and verify single-file models.

    packer build MODEL.gguf|CHECKPOINT-DIR -o NAME.llamafile [--runtime PATH] [--args "-c 2048 ..."]
                 [--quantize Q4_K_M [--allow-requantize] [-t THREADS]]
    packer inspect NAME.llamafile
    packer verify NAME.llamafile

User errors end as one line on stderr (`error: ...`) and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

import click

from packer.build import Interrupted, PackError, build as build_file, cleanup_on_signals, parse_args_option
from runtime import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="packer")
def cli() -> None:
    """Ship a GGUF model as one executable file."""


def _check_mix(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from packer.mixes import MixError, find_mix

    try:
        return find_mix(value) if value is not None else None
    except MixError as e:
        raise click.BadParameter(str(e)) from None


@cli.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the file to write")
@click.option("--runtime", type=click.Path(dir_okay=False),
              help="runtime executable (default: the one `make runtime` built for this platform)")
@click.option("--args", "args_text", metavar="TEXT",
              help='default arguments stored in the file, e.g. "-c 2048 --temp 0.7"; "..." marks where '
                   "the user's own go (default: after them)")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: on a terminal)")
@click.option("--quantize", "mix", metavar="TYPE", callback=_check_mix,
              help="quantize while packing, as llama.cpp's quantizer does: Q2_K, Q3_K_S/M/L, Q4_0, Q4_1, "
                   "Q4_K_S/M, Q5_0, Q5_1, Q5_K_S/M, Q6_K, Q8_0, F16, BF16")
@click.option("--allow-requantize", is_flag=True, help="with --quantize: accept an already quantized model")
@click.option("-t", "--threads", type=click.IntRange(1, 256), help="quantizer threads (default: every core)")
def build(model: str, output: str, runtime: str | None, args_text: str | None, progress: bool | None,
          mix: str | None, allow_requantize: bool, threads: int | None) -> None:
    """Pack MODEL (a GGUF file, or a Hugging Face checkpoint folder: config.json, *.safetensors,
    tokenizer.model) and the runtime into one executable file."""
    if allow_requantize and not mix:  # it only widens what --quantize accepts: alone it would do nothing
        raise click.UsageError("--allow-requantize goes with --quantize TYPE: alone it does nothing")
    args = parse_args_option(args_text)
    with cleanup_on_signals():
        r = build_file(model, output, runtime, args=args, progress=progress, quantize=mix,
                       allow_requantize=allow_requantize, threads=threads)
    click.echo(f"wrote {r.output}: {r.size / 1e6:,.1f} MB (runtime {r.runtime_size / 1e6:,.1f} MB, {r.model_entry} "
               f"{r.model_size / 1e6:,.1f} MB at offset {r.model_offset:,}) in {r.seconds:.1f} s", err=True)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def inspect(file: str) -> None:
    """Show the runtime, the ZIP entries, the model and the stored arguments of FILE."""
    from packer.verify import inspect as inspect_file

    rows = inspect_file(file)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def verify(file: str) -> None:
    """Check CRCs, alignment, the GGUF and the start-up layout of FILE; exit 0 only when all hold."""
    from packer.verify import verify as verify_file

    rep = verify_file(file)
    for c in rep.checks:
        click.echo(f"{'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}")
    click.echo("verified" if rep.ok else "FAILED")
    if not rep.ok:
        sys.exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    from packer.pyiarchive import ArchiveError
    from runtime.gguf import GGUFError
    from runtime.payload import PayloadError

    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="packer", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.UsageError as e:
        click.echo(f"error: {e.format_message()} (packer --help for usage)", err=True)
        return 2
    except (PackError, PayloadError, GGUFError, ArchiveError) as e:
        click.echo(f"error: {e}", err=True)
        return 1
    except OSError as e:
        click.echo(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}", err=True)
        return 1
    except Interrupted as e:  # a signal during a build: its temporary file is gone
        _say(f"error: interrupted by {e.name}; nothing was written")
        return 128 + e.signum
    except (click.Abort, KeyboardInterrupt):
        _say("error: interrupted; nothing was written")
        return 128 + signal.SIGINT


def _say(line: str) -> None:
    """A last line on stderr, which may be gone (a closed terminal: SIGHUP)."""
    try:
        click.echo(line, err=True)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())

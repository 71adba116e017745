"""`python -m runtime` one-shot mode: stdout is only the generated text, logs and
timings on stderr, user errors one line and a non-zero exit, never a traceback."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.cliutil import assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent
REF = json.loads((ROOT / "tests/fixtures/models/reference.json").read_text())
TINY = str(ROOT / "tests/fixtures/models/dense-tied-Q8_0.gguf")  # 1 layer, ctx 512: runs in milliseconds


def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_oneshot_prints_only_the_greedy_text(smollm2_path) -> None:
    chat = REF["smollm2"]["prompts"][0]
    r = run("-m", str(smollm2_path), "-p", chat["text"], "-n", "32", "--temp", "0", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == chat["greedy"]["text"] + "\n"
    assert "tok/s" in r.stderr and "prompt 16 tokens" in r.stderr
    assert r.stderr.rstrip().endswith("stop: end of text")  # the model's <|im_end|> ended it


def test_n_predict_limits_the_output(smollm2_path) -> None:
    r = run("-m", str(smollm2_path), "-p", "Once upon a time", "-n", "5", "--temp", "0", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "generation 5 tokens" in r.stderr and r.stderr.rstrip().endswith("stop: token limit (-n 5)")


def test_n_predict_zero_runs_the_prompt_and_generates_nothing() -> None:
    """-n 0 as llama.cpp's: the prompt is evaluated, no token is generated or printed."""
    r = run("-m", TINY, "-p", "hello there", "-n", "0", "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "\n"
    assert "generation 0 tokens" in r.stderr and r.stderr.rstrip().endswith("stop: token limit (-n 0)")


def test_a_context_too_small_for_the_prompt_says_so() -> None:
    r = run("-m", TINY, "-p", "hello there", "-c", "2")  # (found once the model is loaded: after its summary)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1].endswith("and the context holds 2: no room for a reply (a larger -c, or a "
                                              "shorter prompt)")
    small = run("-m", TINY, "-p", "hi", "-c", "8", "-n", "1")  # its cache is under a MiB: not "0 MiB"
    assert small.returncode == 0 and re.search(r"KV cache [1-9][0-9]* KiB", small.stderr), small.stderr


def test_control_characters_from_a_file_are_escaped_in_errors(tmp_path: Path) -> None:
    """A tensor name with NULs and a terminal escape is named with them shown as escapes, not
    written to the terminal."""
    src = Path(TINY).read_bytes()
    i = src.index(b"blk.0.attn_q.weight")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(src[:i] + b"blk.0.attn_q\x00\x00\x00\x1b[2J" + src[i + len(b"blk.0.attn_q.weight"):])
    r = run("-m", str(bad), "-p", "hi")
    assert_one_line_error(r, "blk.0.attn_q\\x00\\x00\\x00\\x1b[2J")
    assert "\x00" not in r.stderr and "\x1b" not in r.stderr


def test_missing_model(tmp_path: Path) -> None:
    assert_one_line_error(run("-m", str(tmp_path / "nope.gguf"), "-p", "hi"), "not found")


def test_model_path_that_is_not_a_file(tmp_path: Path) -> None:
    """A directory or a FIFO is named as such, at once (opening a FIFO would wait for a writer)."""
    assert_one_line_error(run("-m", str(tmp_path), "-p", "hi", timeout=30), "is a directory")
    os.mkfifo(tmp_path / "pipe")
    assert_one_line_error(run("-m", str(tmp_path / "pipe"), "-p", "hi", timeout=30), "not a regular file")


def test_not_a_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 60)
    assert_one_line_error(run("-m", str(bad), "-p", "hi"), "offset")


def test_truncated_model(tmp_path: Path, smollm2_path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(Path(smollm2_path).read_bytes()[: 50 << 20])
    assert_one_line_error(run("-m", str(cut), "-p", "hi"), "gguf")


def test_unsupported_architecture(tmp_path: Path) -> None:
    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert_one_line_error(run("-m", str(path), "-p", "hi"), "architecture 'gpt2'")


def test_unsupported_tensor_type(tmp_path: Path) -> None:
    """A model whose weights use a type the kernels lack (IQ4_NL) names the tensor."""
    src = ROOT / "tests/fixtures/models/dense-tied-Q8_0.gguf"
    reader = gguf.GGUFReader(src)
    path = tmp_path / "iq.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        vtype = field.types[0]
        w.add_key_value(field.name, value, vtype, sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY
                        else None)
    for t in reader.tensors:
        data, qtype = np.array(t.data), t.tensor_type
        if t.name == "blk.0.attn_q.weight":  # same byte size per 32 values as Q4_0: 18
            qtype = gguf.GGMLQuantizationType.IQ4_NL
            data = np.zeros((int(t.shape[1]), int(t.shape[0]) // 32 * 18), np.uint8)
        w.add_tensor(t.name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert_one_line_error(run("-m", str(path), "-p", "hi"), "blk.0.attn_q.weight")


def test_no_prompt(smollm2_path) -> None:
    assert_one_line_error(run("-m", str(smollm2_path)), "prompt")


@pytest.mark.parametrize("flag", ["--version"])
def test_version(flag: str) -> None:
    r = run(flag)
    assert r.returncode == 0 and r.stdout.startswith("llamapack ")


# -- bad values: one line, never a traceback ---------------------------------------------------

@pytest.mark.parametrize("flag, value, needle", [
    ("-t", "two", "-t/--threads"),
    ("-c", "-5", "-c/--ctx-size"),
    ("-n", "-7", "-n/--n-predict"),
    ("--top-k", "4.5", "--top-k"),
    ("--top-k", "99999999999999999999", "--top-k"),
    ("--top-p", "2", "--top-p"),
    ("--top-p", "-0.1", "--top-p"),
    ("--min-p", "1.5", "--min-p"),
    ("--temp", "nan", "--temp"),
    ("--temp", "inf", "--temp"),
    ("--repeat-penalty", "-1", "--repeat-penalty"),
    ("--repeat-last-n", "-2", "--repeat-last-n"),
    ("--presence-penalty", "nan", "--presence-penalty"),
    ("--seed", "-2", "--seed"),
    ("--parallel", "0", "--parallel"),
    ("--parallel", "100000", "--parallel"),
    ("--chat-template", "llama3x", "unknown chat template 'llama3x'"),  # a typo is not a template
    ("--port", "99999", "--port"),  # refused before the model loads (and in a packer's --args)
    ("--port", "-1", "--port"),
])
def test_a_bad_value_is_one_line(flag: str, value: str, needle: str) -> None:
    r = run("-m", TINY, "-p", "hi", "-n", "2", flag, value)
    assert r.returncode == 2
    assert_one_line_error(r, needle)


def test_prompt_file_errors_name_the_file(tmp_path: Path) -> None:
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9".encode("latin-1"))
    for path, needle in ((tmp_path / "missing.txt", "no such file"), (tmp_path, "is a directory"),
                         (binary, "a binary file"), (latin1, "not UTF-8")):
        r = run("-m", TINY, "-f", str(path), "-n", "2")
        assert r.returncode == 1
        assert_one_line_error(r, f"-f {path}: {needle}")


def test_a_prompt_file(tmp_path: Path) -> None:
    text = tmp_path / "prompt.txt"
    text.write_text("\ufeffhello there", encoding="utf-8")  # a BOM is not part of the prompt
    r = run("-m", TINY, "-f", str(text), "-n", "3", "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout == run("-m", TINY, "-p", "hello there", "-n", "3", "--temp", "0").stdout


def summary(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("llamapack: dense-tied"))


@pytest.mark.parametrize("threads", ["-1", "0"])
def test_threads_zero_or_negative_mean_all_cpus(threads: str) -> None:
    """As in llama.cpp; these were a traceback (negative dimensions) or a silent default."""
    r = run("-m", TINY, "-p", "hi", "-n", "2", "-t", threads)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert summary(r.stderr).endswith(f", {len(os.sched_getaffinity(0))} threads")


def test_more_threads_than_cpus_are_clamped() -> None:
    """-t 100000 allocated scratch buffers for 100000 threads (24 GiB for SmolLM2)."""
    cpus = len(os.sched_getaffinity(0))
    r = run("-m", TINY, "-p", "hi", "-n", "2", "-t", "100000")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"llamapack: -t 100000: {cpus} CPUs here; using {cpus} threads" in r.stderr.splitlines()
    assert summary(r.stderr).endswith(f", {cpus} threads")


def test_context_above_training_is_clamped_with_a_note() -> None:
    r = run("-m", TINY, "-p", "hi", "-n", "2", "-c", "100000")
    assert r.returncode == 0, r.stderr
    assert "llamapack: -c 100000 is above the model's training context; clamped to 512" in r.stderr.splitlines()
    assert "ctx 512" in summary(r.stderr)
    for args in (["-c", "0"], []):  # 0: the training context; the default 4096 is clamped without a note
        r = run("-m", TINY, "-p", "hi", "-n", "2", *args)
        assert "ctx 512" in summary(r.stderr) and "clamped" not in r.stderr


def test_stop_reasons() -> None:
    """The timing line says what ended the generation (it said `stop: stop` / `stop: length`)."""
    r = run("-m", TINY, "-p", "hi", "--temp", "0")  # the tiny model repeats itself until the context is full
    assert r.stderr.rstrip().endswith("stop: context full (512 tokens)"), r.stderr
    r = run("-m", TINY, "-p", "hi", "--temp", "0", "-r", "ii")
    assert r.returncode == 0 and r.stderr.rstrip().endswith('stop: stop string "ii"'), r.stderr


def test_context_shift_goes_past_a_full_context() -> None:
    """--context-shift: a full context drops half of what follows the kept tokens and goes on."""
    r = run("-m", TINY, "-p", "hi", "--temp", "0", "-c", "32", "-n", "100", "--context-shift", "--keep", "-1")
    assert r.returncode == 0, r.stderr
    assert "generation 100 tokens" in r.stderr and r.stderr.rstrip().endswith("stop: token limit (-n 100)")


def test_n_predict_minus_two_stops_at_a_full_context_even_with_context_shift() -> None:
    """llama.cpp's -n -2: until the context is full, shifted or not (it generated for ever)."""
    r = run("-m", TINY, "-p", "hi", "--temp", "0", "-c", "32", "-n", "-2", "--context-shift", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.rstrip().endswith("stop: context full (32 tokens)"), r.stderr


# -- llama.cpp's reading of a command line -----------------------------------------------------

def test_escapes_in_the_prompt_and_the_stop_texts_as_llama_cpp() -> None:
    """-e is llama.cpp's default: "\\n" in -p, -f and -r is a newline (it reached the model as a
    backslash and an n); --no-escape keeps them."""
    from runtime.cli import process_escapes

    assert process_escapes(r"a\nb\tc\\n\'\"\q\x41\xe2\x82\xac\x4") == 'a\nb\tc\\n\'"\\qA€\\x4'
    assert process_escapes("\\") == "\\" and process_escapes("plain") == "plain"
    escaped = run("-m", TINY, "-p", r"hello\nthere", "-n", "3", "--temp", "0")
    plain = run("-m", TINY, "-p", "hello\nthere", "-n", "3", "--temp", "0")
    kept = run("-m", TINY, "-p", r"hello\nthere", "-n", "3", "--temp", "0", "--no-escape")
    assert escaped.returncode == 0 and escaped.stdout == plain.stdout, escaped.stderr
    assert summary(escaped.stderr) and "prompt" in escaped.stderr
    tokens = lambda r: re.search(r"prompt (\d+) tokens", r.stderr).group(1)  # noqa: E731
    assert tokens(escaped) == tokens(plain) != tokens(kept)


def test_a_prompt_files_trailing_newline_is_dropped(tmp_path: Path) -> None:
    """As llama.cpp's -f: `echo text > prompt.txt` gives the prompt "text"."""
    (tmp_path / "p.txt").write_text("hello there\n")
    r = run("-m", TINY, "-f", str(tmp_path / "p.txt"), "-n", "3", "--temp", "0")
    want = run("-m", TINY, "-p", "hello there", "-n", "3", "--temp", "0")
    assert r.returncode == 0 and r.stdout == want.stdout and re.search(r"prompt \d+ tokens", r.stderr).group(0) == \
        re.search(r"prompt \d+ tokens", want.stderr).group(0)


@pytest.mark.parametrize("args,needle", [
    (["-pps"], "unrecognized arguments: -pps"),           # was -p "ps": a prompt replaced in silence
    (["-fa"], "unrecognized arguments: -fa"),             # was -f a: a file named "a" read as the prompt
    (["-hf", "foo/bar"], "unrecognized arguments: -hf"),  # was --help, exit 0
    (["--context", "512"], "unrecognized arguments: --context"),  # was --context-shift
    (["-cnv"], "unrecognized arguments: -cnv"),
])
def test_flags_are_whole_names_as_llama_cpp_reads_them(args: list[str], needle: str) -> None:
    r = run("-m", TINY, "-p", "hi", "-n", "1", *args)
    assert r.returncode == 2 and r.stdout == ""
    assert_one_line_error(r, needle)


def test_a_value_after_a_flag_may_start_with_a_dash() -> None:
    """llama.cpp takes the argument after -p, -r... as its value whatever it looks like."""
    r = run("-m", TINY, "-p", "-x", "-n", "2", "--temp", "0", "-r", "---")
    assert r.returncode == 0, r.stderr
    assert r.stdout == run("-m", TINY, "--prompt=-x", "-n", "2", "--temp", "0", "--reverse-prompt=---").stdout


def test_habitual_llama_cpp_flags_are_accepted() -> None:
    """-ngl (everything runs on the CPU), -s for --seed, --predict for -n."""
    r = run("-m", TINY, "-p", "hi", "-ngl", "99", "-s", "5", "--predict", "4", "--temp", "0.8")
    want = run("-m", TINY, "-p", "hi", "--seed", "5", "-n", "4", "--temp", "0.8")
    assert r.returncode == 0 and r.stdout == want.stdout, r.stderr
    assert "generation 4 tokens" in r.stderr


# -- --help ------------------------------------------------------------------------------------

def test_help_describes_every_flag_and_the_modes() -> None:
    r = run("--help")
    assert r.returncode == 0 and r.stderr == ""
    out = r.stdout
    assert out.startswith("usage: python -m runtime ")
    for part in ("With no mode", "double-clicked", ".args", "`...`", "examples:", "python -m runtime -m model.gguf -p"):
        assert part in out, part
    # every option has a description, and those with a value name their default
    from runtime.cli import build_parser

    for action in build_parser()._actions:
        assert action.help, action.option_strings
        if action.nargs != 0 and action.option_strings and action.dest not in ("prompt", "file"):
            assert "default" in action.help, action.option_strings


def test_help_uses_the_programs_own_name() -> None:
    """A packed file is run as ./name.llamafile: its usage line names it (frozen: argv[0])."""
    code = ("import sys; sys.frozen = True; sys.argv[0] = '/home/me/Mistral-7B.llamafile'\n"
            "from runtime.cli import build_parser; build_parser().print_help()")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("usage: Mistral-7B.llamafile "), r.stdout
    assert "  /home/me/Mistral-7B.llamafile -p " in r.stdout  # the examples as the user ran it


def test_out_of_memory_is_one_line(monkeypatch, capsys) -> None:
    """A context or slot count the machine cannot hold ends in one line, not a MemoryError traceback."""
    from runtime import cli
    from runtime.engine import Engine

    def load(*args, **kwargs):
        raise MemoryError("Unable to allocate 24.0 GiB for an array with shape (100000, 65536)")

    monkeypatch.setattr(Engine, "load", load)
    assert cli.run(cli.build_parser().parse_args(["-m", TINY, "-p", "hi"])) == 1
    assert capsys.readouterr().err == "error: out of memory: Unable to allocate 24.0 GiB for an array with " \
                                      "shape (100000, 65536)\n"


def test_no_mmap_reads_the_weights_and_says_the_same(smollm2_path) -> None:
    """--no-mmap (weights read into memory, as llama.cpp's): the same greedy text as mapped."""
    args = ("-m", str(smollm2_path), "-p", "The capital of France is", "-n", "8", "--temp", "0")
    mapped, read = run(*args), run(*args, "--no-mmap")
    assert mapped.returncode == 0 and read.returncode == 0, read.stderr
    assert read.stdout == mapped.stdout and read.stdout.strip()


# ------------------------------------------------------------------ output format, system prompt, -p/-f

COLORS = {"type": "object", "properties": {"colors": {"type": "array", "items": {"type": "string"},
                                                       "minItems": 1, "maxItems": 3}},
          "required": ["colors"], "additionalProperties": False}


def test_json_schema_constrains_the_output(smollm2_path, tmp_path: Path) -> None:
    """-j and -jf: the output is JSON that the schema accepts (jsonschema is the judge); the same
    schema from a file gives the same text."""
    import jsonschema

    args = ("-m", str(smollm2_path), "-p", "Three colors:", "--temp", "0", "-n", "80")
    r = run(*args, "-j", json.dumps(COLORS))
    assert r.returncode == 0, r.stderr
    jsonschema.validate(json.loads(r.stdout), COLORS)
    (tmp_path / "s.json").write_text(json.dumps(COLORS, indent=2))
    f = run(*args, "-jf", str(tmp_path / "s.json"))
    assert f.returncode == 0 and f.stdout == r.stdout, f.stderr
    free = run(*args)  # unconstrained, the model says something else
    assert free.returncode == 0 and free.stdout != r.stdout


def test_grammar_constrains_the_output(smollm2_path, tmp_path: Path) -> None:
    gbnf = 'root ::= " " ("yes" | "no") "."'
    args = ("-m", str(smollm2_path), "-p", "Is the sky green? Answer:", "--temp", "0.9", "-n", "20")
    for seed in ("3", "4"):  # sampled, not greedy: each choice the grammar leaves is one it allows
        r = run(*args, "--seed", seed, "--grammar", gbnf)
        assert r.returncode == 0, r.stderr
        assert r.stdout in (" yes.\n", " no.\n")
        assert r.stderr.rstrip().endswith("stop: end of text")  # the grammar's end ends it
    (tmp_path / "g.gbnf").write_text(gbnf + "\n")
    f = run(*args, "--seed", "3", "--grammar-file", str(tmp_path / "g.gbnf"))
    assert f.returncode == 0 and f.stdout in (" yes.\n", " no.\n"), f.stderr


@pytest.mark.parametrize("flags, needle", [
    (("--grammar", 'root ::= ("a"'), "--grammar: invalid grammar"),
    (("--grammar", 'start ::= "a"'), "--grammar: invalid grammar"),
    (("-j", "{bad"), "--json-schema: not JSON"),
    (("-j", '{"type": "object", "minProperties": 3, "maxProperties": 1}'), "--json-schema:"),
    (("-j", "[1, 2]"), "--json-schema:"),
    (("-jf", "/nonexistent/schema.json"), "--json-schema-file /nonexistent/schema.json: no such file"),
    (("--grammar-file", "/"), "--grammar-file /: is a directory"),
    (("--grammar", 'root ::= "a"', "-j", "{}"), "--grammar and --json-schema both constrain the output"),
])
def test_a_bad_output_format_is_one_line(flags, needle) -> None:
    """Said before the model loads, naming the flag."""
    r = run("-m", TINY, "-p", "hi", *flags, timeout=60)
    assert_one_line_error(r, needle)


def test_the_last_of_p_and_f_is_the_prompt(tmp_path: Path) -> None:
    """As llama.cpp reads them: -p then -f is the file, -f then -p the text."""
    (tmp_path / "p.txt").write_text("one two three four five six seven\n")
    file_first = run("-m", TINY, "-f", str(tmp_path / "p.txt"), "-p", "hi", "-n", "0")
    p_first = run("-m", TINY, "-p", "hi", "-f", str(tmp_path / "p.txt"), "-n", "0")
    alone = {k: run("-m", TINY, *a, "-n", "0") for k, a in (("p", ("-p", "hi")), ("f", ("-f", str(tmp_path / "p.txt"))))}
    count = [re.search(r"prompt (\d+) tokens", r.stderr) for r in (file_first, p_first, alone["p"], alone["f"])]
    assert all(count), [r.stderr for r in (file_first, p_first)]
    n = [int(m.group(1)) for m in count]  # type: ignore[union-attr]
    assert n[2] != n[3]
    assert (n[0], n[1]) == (n[2], n[3])


def test_system_prompt_makes_a_chat_turn(smollm2_path) -> None:
    """-sys with -p: the prompt is the model's chat template over [system, user] (rendered by jinja2
    as transformers does; tokenized by the tokenizer that tests/test_tokenizer.py holds to llama.cpp's);
    the terminal chat with -sys answers the same."""
    from runtime.gguf import GGUFFile
    from runtime.tokenizer import Tokenizer
    from tests.test_tools import hf_render

    system, user = "You are a pirate.", "Say hello in five words."
    r = run("-m", str(smollm2_path), "-sys", system, "-p", user, "--temp", "0", "-n", "16")
    assert r.returncode == 0, r.stderr
    meta = GGUFFile(str(smollm2_path)).metadata
    text = hf_render(meta["tokenizer.chat_template"],
                     [{"role": "system", "content": system}, {"role": "user", "content": user}], "", "")
    expected = len(Tokenizer.from_gguf_metadata(meta).tokenize(text, add_special=True, parse_special=True))
    assert f"prompt {expected} tokens" in r.stderr, (expected, r.stderr)
    chat = subprocess.run([sys.executable, "-m", "runtime", "-m", str(smollm2_path), "--chat", "-sys", system,
                           "--temp", "0", "-n", "16"], cwd=ROOT, input=user + "\n", capture_output=True, text=True,
                          timeout=120)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout == r.stdout


def test_ignore_eos_generates_past_the_end_of_text(smollm2_path) -> None:
    """The greedy reply that ends with <|im_end|> at 32 tokens goes on to -n with --ignore-eos."""
    chat = REF["smollm2"]["prompts"][0]
    r = run("-m", str(smollm2_path), "-p", chat["text"], "-n", "40", "--temp", "0", "--ignore-eos")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(chat["greedy"]["text"]) and len(r.stdout) > len(chat["greedy"]["text"]) + 1
    assert "generation 40 tokens" in r.stderr and r.stderr.rstrip().endswith("stop: token limit (-n 40)")


def test_ctrl_c_in_one_shot_prints_the_timings(smollm2_path) -> None:
    """Ctrl-C: what was generated, a newline, the timings line ending 'interrupted', exit 130."""
    import signal
    import time

    p = subprocess.Popen([sys.executable, "-m", "runtime", "-m", str(smollm2_path), "-p", "Once upon a time",
                          "--ignore-eos", "--temp", "0", "-n", "-1"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    first = p.stdout.read(1)  # generating
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    last = err.rstrip().splitlines()[-1]
    assert re.search(r"generation [1-9]\d* tokens", last) and last.endswith("stop: interrupted (Ctrl-C)"), err
    assert (first + out).endswith("\n") and len(first + out) > 2


def test_chat_template_file(tmp_path: Path) -> None:
    """--chat-template-file reads the Jinja override from a file: the same prompt as the source given
    inline; a missing file, a broken template, or both flags at once are one line."""
    source = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] "
    (tmp_path / "t.jinja").write_text(source)
    base = ("-m", TINY, "-sys", "Be brief.", "-p", "hello there", "-n", "0")
    counts = []
    for extra in (("--chat-template-file", str(tmp_path / "t.jinja")), ("--chat-template", source), ()):
        r = run(*base, *extra)
        assert r.returncode == 0, r.stderr
        counts.append(int(re.search(r"prompt (\d+) tokens", r.stderr).group(1)))  # type: ignore[union-attr]
    assert counts[0] == counts[1] != counts[2]
    assert_one_line_error(run(*base, "--chat-template-file", str(tmp_path / "none.jinja")),
                          "--chat-template-file")
    (tmp_path / "bad.jinja").write_text("{% for m in messages %}")
    assert_one_line_error(run(*base, "--chat-template-file", str(tmp_path / "bad.jinja")), "template")
    assert_one_line_error(run(*base, "--chat-template-file", str(tmp_path / "t.jinja"), "--chat-template", "chatml"),
                          "both set the template")


def test_a_stop_text_is_printed_in_one_shot_and_ends_a_chat_reply(smollm2_path) -> None:
    """One-shot: the output ends with the -r text that stopped it, as llama.cpp prints it (the greedy
    text cut just after its first occurrence). The terminal chat: the reply ends before it."""
    chat = REF["smollm2"]["prompts"][0]
    greedy = chat["greedy"]["text"]  # "The capital of France is Paris."
    r = run("-m", str(smollm2_path), "-p", chat["text"], "-n", "32", "--temp", "0", "-r", "France")
    assert r.returncode == 0, r.stderr
    assert r.stdout == greedy[:greedy.index("France") + len("France")] + "\n"
    assert r.stderr.rstrip().endswith('stop: stop string "France"')

    def chat_reply(*flags: str) -> str:
        c = subprocess.run([sys.executable, "-m", "runtime", "-m", str(smollm2_path), "--chat", "--temp", "0",
                            "-n", "48", *flags], cwd=ROOT, input="What is the capital of France?\n",
                           capture_output=True, text=True, timeout=120)
        assert c.returncode == 0, c.stderr
        return c.stdout
    free = chat_reply()
    cut = next(w for w in ("France", "Paris", "la", "The", " ") if w in free.rstrip("\n"))
    assert chat_reply("-r", cut) == free[:free.index(cut)] + "\n"


def test_the_mode_given_last_runs() -> None:
    """-p then --chat: the chat (the prompt unused); --chat (or --server) then -p: the one-shot."""
    def go(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "runtime", "-m", TINY, "-n", "3", "--temp", "0", *flags],
                              cwd=ROOT, input="hello there\n", capture_output=True, text=True, timeout=60)
    chat, oneshot = go("--chat"), go("-p", "a stored prompt")
    assert chat.returncode == 0 and oneshot.returncode == 0 and chat.stdout != oneshot.stdout
    assert go("-p", "a stored prompt", "--chat").stdout == chat.stdout
    assert go("-f", "/nonexistent/prompt.txt", "--chat").stdout == chat.stdout  # a file it does not use
    for mode in ("--chat", "--server"):
        r = go(mode, "-p", "a stored prompt")
        assert r.returncode == 0 and r.stdout == oneshot.stdout, r.stderr


def test_what_loading_made_is_out_of_the_collectors_reach(smollm2_path) -> None:
    """load_engine freezes what loading made (gc.freeze): the vocabulary's big lists and dicts are no
    longer walked by each full collection of a long-running chat or server."""
    code = ("import gc; from runtime.cli import build_parser, load_engine; "
            f"eng = load_engine(build_parser().parse_args(['-m', {str(smollm2_path)!r}])); "
            "big = max((v for v in vars(eng.tokenizer).values() if isinstance(v, (list, dict))), key=len); "
            "print(len(big), any(o is big for o in gc.get_objects()), gc.get_freeze_count() > 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    size, tracked, frozen = run.stdout.split()
    assert int(size) == 49152 and tracked == "False" and frozen == "True", run.stdout

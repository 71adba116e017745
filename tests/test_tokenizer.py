"""Tokenizer tests: llama.cpp's ids and texts (committed fixtures), round trips, streaming decode.

The fixtures (tests/fixtures/tokenizer/, made by tools/make_tokenizer_fixtures.py with llama.cpp
through llama-cpp-python) hold, per vocabulary, llama.cpp's ids for ~115 texts x (add_special,
parse_special), its detokenized texts and a digest of every token's piece. Vocabularies are
Mistral's (committed GGUF), SmolLM2's (the real model file) and variants of both made by changing
a few metadata keys, which is done here on the metadata dict (see README.md there); and, in
llama_cpp_ids_arch.json, the real vocabularies of the architecture tests (Qwen2.5-Coder's qwen2 BPE,
the same under Llama 3's llama-bpe pre-tokenizer, Gemma 3's 262k SentencePiece: tests/real_models.py).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import tokenizer_bpe
from runtime.gguf import GGUFFile
from runtime.tokenizer import EOT_NAMES, Tokenizer, TokenizerError

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
MISTRAL_GGUF = FIXTURES / "mistral-v1-vocab.gguf"
DOC = json.loads((FIXTURES / "llama_cpp_ids.json").read_text(encoding="utf-8"))
DOC["vocabs"].update(json.loads((FIXTURES / "llama_cpp_ids_arch.json").read_text(encoding="utf-8"))["vocabs"])
VOCABS = list(DOC["vocabs"])
FLAGS = ("00", "01", "10", "11")  # add_special, parse_special
Toks = dict[str, Tokenizer]
Meta = dict[str, dict[str, Any]]
PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="session")
def base_metadata(smollm2_path: Path, qwen25_coder_path: Path, gemma3_path: Path) -> Meta:
    out = {}
    for name, path in (("mistral", MISTRAL_GGUF), ("smollm2", smollm2_path), ("qwen2.5-coder", qwen25_coder_path),
                       ("gemma3", gemma3_path)):
        with GGUFFile(path) as f:
            out[name] = dict(f.metadata)
    return out


def variant_metadata(base: Meta, spec: dict[str, Any]) -> dict[str, Any]:
    """The base vocabulary's metadata, the variant's keys set or dropped, token types patched."""
    md = dict(base[spec["base"]])
    for key in spec["drop"]:
        md.pop(key, None)
    md.update(spec["set"])
    if spec["types"]:
        md["tokenizer.ggml.token_type"] = types = list(md["tokenizer.ggml.token_type"])
        for text, new_type in spec["types"].items():
            types[md["tokenizer.ggml.tokens"].index(text)] = new_type
    return md


@pytest.fixture(scope="session")
def tokenizers(base_metadata: Meta) -> Toks:
    return {name: Tokenizer.from_gguf_metadata(variant_metadata(base_metadata, spec))
            for name, spec in DOC["vocabs"].items()}


def ids_of(case: dict[str, Any], flags: str) -> list[int]:
    value = case[flags]
    return case[value[1:]] if isinstance(value, str) else value  # "=00": same as case["00"]


def text_of(value: str | dict[str, str]) -> str:
    if isinstance(value, dict):
        return bytes.fromhex(value["hex"]).decode("utf-8", "replace")
    return value


# --- identical to llama.cpp --------------------------------------------------------------------

@pytest.mark.parametrize("name", VOCABS)
def test_ids_identical_to_llama_cpp(tokenizers: Toks, name: str) -> None:
    tok = tokenizers[name]
    bad = []
    for case in DOC["vocabs"][name]["cases"]:
        for flags in FLAGS:
            want = ids_of(case, flags)
            got = tok.tokenize(case["text"], add_special=flags[0] == "1",
                               parse_special=flags[1] == "1")
            if got != want:
                bad.append(f"{flags} {case['text'][:50]!r}: llama.cpp {want[:12]} ours {got[:12]}")
    assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:10])


@pytest.mark.parametrize("name", VOCABS)
def test_detokenize_identical_to_llama_cpp(tokenizers: Toks, name: str) -> None:
    """llama_detokenize(ids, remove_special, unparse_special) for the (True, True) ids."""
    tok = tokenizers[name]
    bad = []
    for case in DOC["vocabs"][name]["cases"]:
        ids = ids_of(case, "11")
        for flags, want in case["detok"].items():
            got = tok.detokenize(ids, special=flags[1] == "1", remove_special=flags[0] == "1")
            if got != text_of(want):
                bad.append(f"{flags} {case['text'][:40]!r}: "
                           f"llama.cpp {text_of(want)[:40]!r} ours {got[:40]!r}")
    assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:10])


@pytest.mark.parametrize("name", VOCABS)
def test_pieces_give_llama_cpp_python_detokenize(tokenizers: Toks, name: str) -> None:
    """llama-cpp-python's Llama.detokenize: pieces joined, one leading space dropped after BOS."""
    tok = tokenizers[name]
    for case in DOC["vocabs"][name]["cases"]:
        ids = ids_of(case, "11")
        for special, want in case["lcp_detok"].items():
            out = b"".join(tok.token_to_piece(i, special=special == "1") for i in ids)
            if ids and ids[0] == tok.bos_id and out[:1] == b" ":
                out = out[1:]
            assert out.decode("utf-8", "replace") == text_of(want), case["text"]


@pytest.mark.parametrize("name", VOCABS)
def test_special_ids_and_pieces_identical_to_llama_cpp(tokenizers: Toks, base_metadata: Meta, name: str) -> None:
    tok, info = tokenizers[name], DOC["vocabs"][name]["info"]
    assert tok.n_vocab == info["n_vocab"]
    assert (tok.bos_id, tok.eos_id) == (info["bos"], info["eos"])
    # EOT: when the file names none and several tokens are named like one, llama.cpp takes the first
    # in its hash map's iteration order and this module the lowest id (the module's docstring; only
    # EOT itself differs, the EOG set below does not). Qwen2.5 has both <|endoftext|> and <|im_end|>.
    candidates = [tok.token_to_id[t] for t in EOT_NAMES if t in tok.token_to_id]
    named = "tokenizer.ggml.eot_token_id" in variant_metadata(base_metadata, DOC["vocabs"][name])
    if len(candidates) > 1 and not named:
        assert tok.eot_id in candidates and info["eot"] in candidates
    else:
        assert tok.eot_id == info["eot"]
    assert (tok.add_bos, tok.add_eos) == (info["add_bos"], info["add_eos"])
    assert sorted(tok.eog_ids) == info["eog"]
    assert [i for i in range(tok.n_vocab) if tok.is_eog(i)] == info["eog"]
    for special, digest in info["pieces_sha256"].items():
        h = hashlib.sha256()
        for tid in range(tok.n_vocab):
            piece = tok.token_to_piece(tid, special=special == "1")
            h.update(len(piece).to_bytes(4, "little") + piece)
        assert h.hexdigest() == digest, f"token_to_piece(special={special == '1'}) differs"


def test_known_facts(tokenizers: Toks) -> None:
    """A few ids spelled out, so a wrong fixture cannot hide a wrong tokenizer."""
    mistral, smollm = tokenizers["mistral"], tokenizers["smollm2"]
    assert (mistral.bos_id, mistral.eos_id, mistral.unk_id, mistral.add_bos) == (1, 2, 0, True)
    assert mistral.tokenize("<s>[INST]", parse_special=True)[:2] == [1, 1]
    assert mistral.token_to_piece(mistral.token_to_id["<0x0A>"]) == b"\n"
    assert mistral.detokenize(mistral.tokenize("Hello world")) == " Hello world"  # BOS: no strip
    assert mistral.detokenize(mistral.tokenize("Hello world", add_special=False)) == "Hello world"
    chatml = "<|im_start|>user\nhi<|im_end|>"
    assert smollm.tokenize(chatml, parse_special=True) == [1, 4093, 198, 6004, 2]
    assert smollm.tokenize("Hello world") == [19556, 905]  # no BOS for this gpt2 vocabulary
    assert smollm.eog_ids == {0, 2, 4}  # <|endoftext|>, <|im_end|>, and <reponame> as FIM repo
    assert smollm.is_eog(2) and not smollm.is_eog(1)


# --- errors ------------------------------------------------------------------------------------

def test_unknown_pre_tokenizer_is_a_one_line_error(base_metadata: Meta) -> None:
    md = dict(base_metadata["smollm2"], **{"tokenizer.ggml.pre": "no-such-pre"})
    with pytest.raises(TokenizerError) as e:
        Tokenizer.from_gguf_metadata(md)
    assert "'no-such-pre'" in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("model", ["bert", "t5", None])
def test_unsupported_model_is_a_one_line_error(base_metadata: Meta, model: str | None) -> None:
    md = dict(base_metadata["smollm2"], **{"tokenizer.ggml.model": model})
    with pytest.raises(TokenizerError, match=repr(model) if model else "tokenizer.ggml.model is missing") as e:
        Tokenizer.from_gguf_metadata(md)
    assert "\n" not in str(e.value)


def test_missing_vocabulary_is_an_error() -> None:
    with pytest.raises(TokenizerError, match="tokenizer.ggml.tokens"):
        Tokenizer.from_gguf_metadata({"tokenizer.ggml.model": "llama"})


@pytest.mark.parametrize("key, cut", [("tokenizer.ggml.scores", 1), ("tokenizer.ggml.token_type", 1),
                                      ("tokenizer.ggml.token_type", -1)])
def test_per_token_arrays_of_the_wrong_length_are_errors(base_metadata: Meta, key: str, cut: int) -> None:
    """One score and one type per token, as llama.cpp indexes them (it reads past a short array);
    before, a short array was silently replaced and a long one cut."""
    md = dict(base_metadata["mistral"])
    md[key] = md[key][:-cut] if cut > 0 else md[key] + md[key][:1]
    with pytest.raises(TokenizerError, match=f"{key} has {len(md[key])} entries for 32000 tokens"):
        Tokenizer.from_gguf_metadata(md)


@pytest.mark.parametrize("key, value", [("tokenizer.ggml.bos_token_id", "1"), ("tokenizer.ggml.eos_token_id", True),
                                        ("tokenizer.ggml.add_bos_token", 1), ("tokenizer.ggml.scores", "x"),
                                        ("tokenizer.ggml.tokens", [1, 2]), ("tokenizer.ggml.pre", 3)])
def test_wrong_value_types_are_one_line_errors(base_metadata: Meta, key: str, value: Any) -> None:
    """Before, a token id of the wrong type was ignored, a string add_bos_token taken as true,
    a non-list score array replaced: now the key is named (GGUFError, a ValueError)."""
    from runtime.gguf import GGUFError
    md = dict(base_metadata["smollm2" if key.endswith("pre") else "mistral"], **{key: value})
    with pytest.raises(GGUFError, match=key.replace(".", r"\.")) as e:
        Tokenizer.from_gguf_metadata(md)
    assert "\n" not in str(e.value)


def test_merges_are_required_for_gpt2(base_metadata: Meta) -> None:
    md = dict(base_metadata["smollm2"])
    del md["tokenizer.ggml.merges"]
    with pytest.raises(TokenizerError, match="tokenizer.ggml.merges"):
        Tokenizer.from_gguf_metadata(md)


def test_missing_pre_means_default(base_metadata: Meta) -> None:
    md = dict(base_metadata["smollm2"])
    del md["tokenizer.ggml.pre"]
    assert Tokenizer.from_gguf_metadata(md).pre == "default"


def test_out_of_range_id_is_an_error(tokenizers: Toks) -> None:
    tok = tokenizers["smollm2"]
    for bad in (-1, tok.n_vocab):
        with pytest.raises(TokenizerError):
            tok.token_to_piece(bad)
        with pytest.raises(TokenizerError):
            tok.detokenize([5, bad])


def test_from_gguf_takes_a_path_or_a_file() -> None:
    by_path = Tokenizer.from_gguf(MISTRAL_GGUF)
    with GGUFFile(MISTRAL_GGUF) as f:
        by_file = Tokenizer.from_gguf(f)
    assert by_path.tokenize("Mixtral") == by_file.tokenize("Mixtral")


# --- properties --------------------------------------------------------------------------------

def test_lone_surrogates_do_not_raise(tokenizers: Toks) -> None:
    for name in ("mistral", "smollm2"):
        tok = tokenizers[name]
        assert tok.tokenize("a\ud800b", False) == tok.tokenize("a\ufffdb", False)
        assert tok.tokenize("\ud83d\ude00", False) == tok.tokenize("😀", False)


def test_spm_word_split_equals_whole_fragment(tokenizers: Toks) -> None:
    """The per-word speed-up of tokenizer_spm gives what one pass over the fragment gives."""
    spm = tokenizers["mistral"]._spm
    assert spm is not None and spm.split_words
    for case in DOC["vocabs"]["mistral"]["cases"]:
        text = " " + case["text"].replace(" ", "\u2581")
        assert spm.encode(text) == spm._encode_word(text), case["text"]


def test_word_cache_encodes_each_word_once_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.tokenizer_cache import WordCache

    seen: list[str] = []

    def encode_word(word: str) -> list[int]:
        seen.append(word)
        return [ord(c) for c in word]

    monkeypatch.setattr(WordCache, "LIMIT", 3)
    cache = WordCache(encode_word)
    assert cache.encode(["ab", "c", "ab", "ab"]) == [97, 98, 99, 97, 98, 97, 98]
    assert seen == ["ab", "c"]
    assert cache.encode(["d", "e", "ab", "c"]) == [100, 101, 97, 98, 99]  # full at "e": dropped whole
    assert seen == ["ab", "c", "d", "e", "ab", "c"] and len(cache._cache) == 3


def test_pathological_inputs_finish(tokenizers: Toks) -> None:
    """Long single words and runs (one heap per word, no quadratic loops); no wall-clock limit."""
    for name in ("mistral", "smollm2", "smollm2-llama-bpe"):
        tok = tokenizers[name]
        for text in ("a" * 20000, "1" * 20000, " " * 20000, "ab" * 10000, "日本" * 5000):
            assert tok.detokenize(tok.tokenize(text, add_special=False)) == text


def bpe_kept_bytes(tok: Tokenizer, text: str) -> bytes:
    """The UTF-8 of `text` without the bytes that have no token in a byte-level vocabulary:
    llama.cpp drops those (SmolLM2 has no token for 21 bytes, e.g. 0xF1, lead byte of U+40000+)."""
    return bytes(b for b in text.encode("utf-8")
                 if tokenizer_bpe.BYTE_TO_CHAR[b] in tok.token_to_id)


@PROPERTY
@given(text=st.text(max_size=60))
def test_round_trip(tokenizers: Toks, text: str) -> None:
    """Byte fallback (Mistral) and byte-level BPE (SmolLM2) lose nothing but bytes without a
    token; "▁" reads as a space; the prefix space goes, unless a BOS removed by remove_special
    preceded it (llama.cpp's llama_detokenize)."""
    mistral, smollm = tokenizers["mistral"], tokenizers["smollm2"]
    assert smollm.detokenize(smollm.tokenize(text, add_special=False)) == \
        bpe_kept_bytes(smollm, text).decode("utf-8", "replace")
    plain = text.replace("\u2581", " ")
    assert mistral.detokenize(mistral.tokenize(text, add_special=False)) == plain
    with_bos = mistral.tokenize(text)
    assert mistral.detokenize(with_bos, remove_special=True) == (" " + plain if text else "")


@PROPERTY
@given(text=st.text(max_size=40), name=st.sampled_from(["mistral", "smollm2", "smollm2-llama-bpe"]))
def test_stream_decoder_never_splits_a_character(tokenizers: Toks, text: str, name: str) -> None:
    """Fed one id at a time, the decoder holds back partial UTF-8: no U+FFFD on valid text, and
    its output is the pieces joined (for SmolLM2: the text itself)."""
    tok = tokenizers[name]
    ids = tok.tokenize(text, add_special=False)
    dec = tok.decoder()
    parts = [dec.feed(i) for i in ids] + [dec.flush()]
    lossless = tok.model == "llama" or bpe_kept_bytes(tok, text) == text.encode("utf-8")
    if lossless and "\ufffd" not in text:
        assert all("\ufffd" not in p for p in parts)
    assert "".join(parts) == b"".join(tok.token_to_piece(i) for i in ids).decode("utf-8", "replace")
    if name == "smollm2" and lossless:
        assert "".join(parts) == text


def test_stream_decoder_special_and_invalid_bytes(tokenizers: Toks) -> None:
    tok = tokenizers["mistral"]
    byte = {b: tok.token_to_id[f"<0x{b:02X}>"] for b in (0xE6, 0x97, 0xA5, 0xFF)}
    dec = tok.decoder()
    assert [dec.feed(byte[0xE6]), dec.feed(byte[0x97])] == ["", ""]
    assert dec.feed(byte[0xA5]) == "日"
    assert dec.feed(byte[0xFF]) == "\ufffd"  # never valid: replaced at once
    assert dec.feed(byte[0xE6]) == "" and dec.flush() == "\ufffd"  # unfinished at the end
    assert tok.decoder().feed(tok.eos_id) == ""
    assert tok.decoder(special=True).feed(tok.eos_id) == "</s>"


def test_user_defined_tokens_always_cut_out(tokenizers: Toks) -> None:
    """USER_DEFINED tokens are matched in text even without parse_special, and printed as is."""
    tok = tokenizers["smollm2-userdef"]
    ing = tok.token_to_id["ing"]
    assert ing in tok.tokenize("singing", add_special=False)
    assert tok.token_to_piece(tok.token_to_id["<|im_start|>"]) == b"<|im_start|>"
    assert tok.token_to_piece(tok.token_to_id["lo"]) == b""  # UNUSED: empty piece


# --- the Unicode table -------------------------------------------------------------------------

def test_unicode_table_agrees_with_unicodedata() -> None:
    """llama.cpp's categories (UCD 15.1) equal Python's wherever both assign the code point,
    and every code point Python <= 15.1 assigns is assigned in the table."""
    tb = tokenizer_bpe
    major = {"C": tb.CAT_CONTROL, "L": tb.CAT_LETTER, "M": tb.CAT_MARK, "N": tb.CAT_NUMBER,
             "P": tb.CAT_PUNCTUATION, "S": tb.CAT_SYMBOL, "Z": tb.CAT_SEPARATOR}
    old_python = tuple(map(int, unicodedata.unidata_version.split("."))) <= (15, 1, 0)
    starts, cats = tokenizer_bpe.category_ranges()
    assert starts[0] == 0 and len(starts) == len(cats) > 2000
    bounds = starts[1:] + [tokenizer_bpe.MAX_CODEPOINT]
    bad = []
    for start, end, cat in zip(starts, bounds, cats):
        for cp in range(start, end):
            py = unicodedata.category(chr(cp))
            if py == "Cn" or (cat == tokenizer_bpe.CAT_UNDEFINED and not old_python):
                continue
            if cat != major[py[0]]:
                bad.append(f"U+{cp:04X} {py} {cat}")
    assert not bad, bad[:10]
    assert tokenizer_bpe.category(ord("a")) == tokenizer_bpe.CAT_LETTER
    assert tokenizer_bpe.category(0x1FAE8) == tokenizer_bpe.CAT_SYMBOL   # Unicode 15 emoji
    assert tokenizer_bpe.category(0x10D40) == tokenizer_bpe.CAT_UNDEFINED  # Unicode 16: not in 15.1


def test_pre_tokenizer_words() -> None:
    """A few splits spelled out (llama.cpp's matchers, not textbook regex semantics)."""
    assert tokenizer_bpe.pre_tokenize("smollm", "ab 12  cd\n") == [
        "ab", " ", "1", "2", " ", " cd", "\n"]
    assert tokenizer_bpe.pre_tokenize("llama3", "I'M 12345  x\n\n y") == [
        "I", "'M", " ", "123", "45", " ", " x", "\n\n", " y"]
    assert tokenizer_bpe.pre_tokenize("qwen2", "a123") == ["a", "1", "2", "3"]
    assert tokenizer_bpe.pre_tokenize("default", "x+=1234") == ["x", "+=", "123", "4"]


# letters (Latin, Greek, CJK), digits, spaces, newlines, a tab, an apostrophe, punctuation, a mark
_PIECES_ALPHABET = st.sampled_from(list("abcsStM ") + ["\n", "\r", "\t", "'", "1", "2", "３", "é", "Ω", "中", "文",
                                                       ".", ",", "+=", "$", "\u0301", "\u00a0", "  ", "\n\n"])


@PROPERTY
@given(parts=st.lists(_PIECES_ALPHABET, max_size=120), piece_chars=st.integers(1, 12))
def test_a_long_text_in_pieces_gives_the_whole_texts_words(parts: list[str], piece_chars: int) -> None:
    """pre_tokenize cuts megabytes into pieces after a letter that a space or newline follows (the
    server's other requests wait while one regex call runs); the words are those of one call."""
    text = "".join(parts)
    for family in ("gpt2", "smollm", "llama3", "qwen2", "default"):
        whole = tokenizer_bpe._pre_tokenize(family, text)
        old = tokenizer_bpe.PIECE_CHARS
        tokenizer_bpe.PIECE_CHARS = piece_chars
        try:
            assert tokenizer_bpe.pre_tokenize(family, text) == whole, family
        finally:
            tokenizer_bpe.PIECE_CHARS = old

"""Tokenizers from GGUF metadata, with llama.cpp's token ids (src/llama-vocab.cpp).

    tok = Tokenizer.from_gguf_metadata(gguf_file.metadata)
    ids = tok.tokenize("<|im_start|>user\\nhi<|im_end|>", add_special=True, parse_special=True)
    text = tok.detokenize(ids)
    dec = tok.decoder(); out = "".join(dec.feed(i) for i in ids) + dec.flush()

Vocabulary types (`tokenizer.ggml.model`):
  - "llama": SentencePiece by scores with byte fallback (tokenizer_spm.py) - Mistral, Mixtral;
  - "gpt2":  byte-level BPE by merges with a pre-tokenizer named by `tokenizer.ggml.pre`
             (tokenizer_bpe.py) - SmolLM2, Llama 3, Qwen2, ...
Anything else, or a pre-tokenizer not listed in tokenizer_bpe.PRE_TOKENIZERS, raises
TokenizerError with a one-line message.

What is replicated from llama.cpp's loader (llama_vocab::impl::load):
  - defaults per type: llama -> BOS 1, EOS 2, UNK 0, add_bos, add_space_prefix; gpt2 -> BOS = EOS
    = 11, no BOS (except the llama3 family), cleaned-up spaces on detokenize (per pre-tokenizer);
    then the file's keys override them (ids out of range are ignored);
  - token attributes from `tokenizer.ggml.token_type`; tokens named like end-of-turn / FIM /
    end-of-generation markers become CONTROL; the end-of-generation set is every token named like
    one (llama.cpp's list, e.g. "</s>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>"), plus EOS,
    EOT, EOM and the FIM pad/repo/separator tokens;
  - special tokens in text (tokenizer_st_partition): CONTROL, USER_DEFINED and UNKNOWN tokens,
    longest text first, each cutting every raw fragment at its occurrences. USER_DEFINED tokens
    are always cut out; CONTROL/UNKNOWN only with parse_special=True.
Not replicated: which token llama.cpp takes as EOT / FIM-prefix / ... when the file does not say
and several candidates exist: llama.cpp takes the first in hash-map order, this module the lowest
id (for SmolLM2 both give EOT = 0, "<|endoftext|>"). The EOG set does not depend on it.

Detokenizing (`detokenize`) is llama.cpp's llama_detokenize(remove_special, unparse_special=
special): pieces concatenated, the first piece's leading space dropped when the vocabulary adds a
prefix space (`add_space_prefix`) - unless the first token is a BOS removed by remove_special,
or a BOS kept: then no space is dropped at all - and for most BPE pre-tokenizers llama.cpp's
"clean_spaces" pass (" ." -> ".", " 's" -> "'s", ...). llama-cpp-python's `Llama.detokenize`
differs: it concatenates the pieces and drops one leading space only when the first token is BOS;
`token_to_piece` gives the same pieces, so that form is b"".join(pieces) plus that rule.
"""

from __future__ import annotations

import codecs
from typing import Any, Iterable

from .constants import (
    KEY_GENERAL_NAME, KEY_TOKENIZER_ADD_BOS, KEY_TOKENIZER_ADD_EOS, KEY_TOKENIZER_ADD_SPACE_PREFIX, KEY_TOKENIZER_MERGES,
    KEY_TOKENIZER_MODEL, KEY_TOKENIZER_PRE, KEY_TOKENIZER_SCORES, KEY_TOKENIZER_TOKEN_ID, KEY_TOKENIZER_TOKEN_TYPE,
    KEY_TOKENIZER_TOKENS, TokenType,
)
from .gguf import get_key
from .tokenizer_bpe import BPE, PRE_TOKENIZERS, decode_piece
from .tokenizer_spm import SPACE, SPM

# llama.cpp's llama_token_attr bits
ATTR_UNDEFINED = 0
ATTR_UNKNOWN = 1 << 0
ATTR_UNUSED = 1 << 1
ATTR_NORMAL = 1 << 2
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_BYTE = 1 << 5
ATTR_LSTRIP = 1 << 7
ATTR_RSTRIP = 1 << 8

# token type (tokenizer.ggml.token_type) -> attribute; other values -> ATTR_UNDEFINED
_TYPE_TO_ATTR = [0] * (max(TokenType) + 1)
for _type, _attr in ((TokenType.NORMAL, ATTR_NORMAL), (TokenType.UNKNOWN, ATTR_UNKNOWN),
                     (TokenType.CONTROL, ATTR_CONTROL), (TokenType.USER_DEFINED, ATTR_USER_DEFINED),
                     (TokenType.UNUSED, ATTR_UNUSED), (TokenType.BYTE, ATTR_BYTE)):
    _TYPE_TO_ATTR[_type] = _attr

# Token texts llama.cpp recognises when the file does not name the token (llama-vocab.cpp).
EOT_NAMES = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
             "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
             "<end_of_utterance>")
EOM_NAMES = ("<|eom_id|>",)
FIM_PRE_NAMES = ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                 "▁<PRE>", "<|code_prefix|>", "<|prefix|>")
FIM_SUF_NAMES = ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                 "▁<SUF>", "<|code_suffix|>", "<|suffix|>")
FIM_MID_NAMES = ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                 "▁<MID>", "<|code_middle|>", "<|middle|>")
FIM_PAD_NAMES = ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")
FIM_REP_NAMES = ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")
FIM_SEP_NAMES = ("<|file_sep|>",)
EOG_NAMES = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~["))

_C_SPACES = " \t\n\v\f\r"  # C isspace(), what llama.cpp strips around LSTRIP/RSTRIP tokens


class TokenizerError(ValueError):
    """A vocabulary this module cannot build or use; the message is one line."""


def check_vocab(metadata: dict[str, Any]) -> int:
    """The number of tokens, after checking what building a Tokenizer needs: the keys' types
    (gguf.get_key), a supported model and pre-tokenizer, a non-empty token list, one score and
    one type per token when present, merges for a gpt2 vocabulary. TokenizerError otherwise."""
    md = metadata
    model = get_key(md, KEY_TOKENIZER_MODEL)
    if model is None:
        raise TokenizerError(f"tokenizer: the file has no tokenizer (metadata key {KEY_TOKENIZER_MODEL} is missing)")
    if model not in ("llama", "gpt2"):
        raise TokenizerError(f"tokenizer: unsupported tokenizer model {model!r} "
                             f"({KEY_TOKENIZER_MODEL}); supported: 'llama', 'gpt2'")
    tokens = get_key(md, KEY_TOKENIZER_TOKENS)
    if not tokens:
        raise TokenizerError(f"tokenizer: the file has no vocabulary ({KEY_TOKENIZER_TOKENS})")
    n = len(tokens)
    for key in (KEY_TOKENIZER_SCORES, KEY_TOKENIZER_TOKEN_TYPE):
        values = get_key(md, key)
        if values is not None and len(values) != n:
            raise TokenizerError(f"tokenizer: {key} has {len(values)} entries for "
                                 f"{n} tokens ({KEY_TOKENIZER_TOKENS}); expected one per token")
    if model == "gpt2":
        pre = get_key(md, KEY_TOKENIZER_PRE) or "default"
        if pre not in PRE_TOKENIZERS:
            raise TokenizerError(
                f"tokenizer: unknown pre-tokenizer type {pre!r} ({KEY_TOKENIZER_PRE}); "
                f"supported: {', '.join(sorted(PRE_TOKENIZERS))}")
        if get_key(md, KEY_TOKENIZER_MERGES) is None:
            raise TokenizerError(f"tokenizer: gpt2 vocabulary without {KEY_TOKENIZER_MERGES}")
    return n


def _token_attributes(types: list[int] | None, n: int) -> list[int]:
    """ATTR_* bits per token from `tokenizer.ggml.token_type` (one per token, check_vocab);
    NORMAL for every token when the file has none."""
    if types is None:
        return [ATTR_NORMAL] * n
    if min(types) >= 0 and max(types) < len(_TYPE_TO_ATTR):
        return list(map(_TYPE_TO_ATTR.__getitem__, types))
    return [_TYPE_TO_ATTR[t] if 0 <= t < len(_TYPE_TO_ATTR) else ATTR_UNDEFINED for t in types]


class Tokenizer:
    """A GGUF vocabulary: text <-> token ids exactly as llama.cpp does it.

    Attributes: model ("llama" | "gpt2"), pre (pre-tokenizer name, "" for llama), tokens (texts),
    attrs (ATTR_* bits per id), n_vocab, bos_id / eos_id / eot_id / eom_id / unk_id / pad_id
    (int or None), eog_ids (frozenset), add_bos, add_eos, add_space_prefix, clean_spaces.
    """

    def __init__(self, metadata: dict[str, Any]) -> None:
        md = metadata
        self._read_vocabulary(md)
        bos, eos, unk = self._read_type_defaults(md)
        self.attrs = _token_attributes(get_key(md, KEY_TOKENIZER_TOKEN_TYPE), self.n_vocab)
        fim = self._read_special_ids(md, bos, eos, unk)
        self._find_named_tokens(fim)
        self._specials = self._special_tokens(get_key(md, KEY_GENERAL_NAME, "").lower())
        self._pieces: list[bytes | None] = [None] * self.n_vocab
        self._spm, self._bpe = self._make_encoder(md)

    def _read_vocabulary(self, md: dict[str, Any]) -> None:
        """The model type and the token texts (empty ones named, as llama.cpp does)."""
        n = check_vocab(md)
        tokens = md[KEY_TOKENIZER_TOKENS]
        self.model = md[KEY_TOKENIZER_MODEL]
        self.tokens = tokens if all(tokens) else [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        self.n_vocab = n
        self.token_to_id = dict(zip(self.tokens, range(n)))  # a repeated text: the last id wins

    def _read_type_defaults(self, md: dict[str, Any]) -> tuple[int, int, int | None]:
        """The vocabulary type's defaults (llama_vocab::impl::load), the file's add_space_prefix
        over them; returns the default BOS, EOS and UNK ids."""
        if self.model == "llama":
            self.pre = ""
            bos, eos, unk = 1, 2, 0
            self.add_bos, self.add_eos = True, False
            self.add_space_prefix, self.clean_spaces = True, False
        else:  # "gpt2" (check_vocab)
            self.pre = get_key(md, KEY_TOKENIZER_PRE) or "default"
            _, self.clean_spaces, _, self.add_bos = PRE_TOKENIZERS[self.pre]
            bos, eos, unk = 11, 11, None
            self.add_eos, self.add_space_prefix = False, False
        self.add_space_prefix = get_key(md, KEY_TOKENIZER_ADD_SPACE_PREFIX, self.add_space_prefix)
        return bos, eos, unk

    def _read_special_ids(self, md: dict[str, Any], bos: int, eos: int, unk: int | None) -> dict[str, int | None]:
        """The special token ids and add_bos / add_eos the file gives, over the defaults; returns
        the FIM ids (pre, suf, mid, pad, rep, sep)."""
        n = self.n_vocab

        def special(key: str, default: int | None) -> int | None:
            if default is not None and default >= n:
                default = None
            value = get_key(md, KEY_TOKENIZER_TOKEN_ID.format(name=key))
            return value if value is not None and value < n else default  # as llama.cpp: bad ids ignored

        self.bos_id = special("bos", bos)
        self.eos_id = special("eos", eos)
        self.unk_id = special("unknown", unk)
        self.pad_id = special("padding", None)
        self.eot_id = special("eot", None)
        self.eom_id = special("eom", None)
        fim = {k: special(f"fim_{k}", None)
               for k in ("pre", "suf", "mid", "pad", "rep", "sep")}
        for key, old in (("pre", "prefix"), ("suf", "suffix"), ("mid", "middle")):
            fim[key] = special(old, fim[key])
        self.add_bos = get_key(md, KEY_TOKENIZER_ADD_BOS, self.add_bos)
        self.add_eos = get_key(md, KEY_TOKENIZER_ADD_EOS, self.add_eos)
        return fim

    def _find_named_tokens(self, fim: dict[str, int | None]) -> None:
        """EOT, EOM and FIM tokens the file does not name, found by their text (each found becomes
        CONTROL), and the end-of-generation set."""
        self.eot_id = self.eot_id if self.eot_id is not None else self._find(EOT_NAMES)
        self.eom_id = self.eom_id if self.eom_id is not None else self._find(EOM_NAMES)
        for key, names in (("pre", FIM_PRE_NAMES), ("suf", FIM_SUF_NAMES), ("mid", FIM_MID_NAMES),
                           ("pad", FIM_PAD_NAMES), ("rep", FIM_REP_NAMES), ("sep", FIM_SEP_NAMES)):
            if fim[key] is None:
                fim[key] = self._find(names)
        self.fim_ids = dict(fim)  # pre, suf, mid, pad, rep, sep: the fill-in-the-middle tokens or None
        eog = {fim[k] for k in ("pad", "rep", "sep") if fim[k] is not None}
        for name in EOG_NAMES:
            tid = self.token_to_id.get(name)
            if tid is not None:
                eog.add(tid)
                self.attrs[tid] |= ATTR_CONTROL
        eog.update(t for t in (self.eos_id, self.eot_id, self.eom_id) if t is not None)
        self.eog_ids = frozenset(eog)

    def _special_tokens(self, model_name: str) -> list[int]:
        """The tokens cut out of text before tokenizing, longest first (by UTF-8 length); for
        Phi-3 (by `general.name`, lowercase) llama.cpp's per-model RSTRIP attributes too."""
        specials = [i for i, a in enumerate(self.attrs)
                    if a & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)]
        specials.sort(key=lambda i: -len(self.tokens[i].encode("utf-8")))
        if "phi-3" in model_name or "phi3" in model_name:
            for i in specials:
                self.attrs[i] |= ATTR_RSTRIP
            for text, on in (("</s>", True), ("<unk>", False), ("<s>", False),
                             ("<|endoftext|>", False)):
                if text in self.token_to_id:
                    i = self.token_to_id[text]
                    self.attrs[i] = self.attrs[i] & ~ATTR_RSTRIP | (ATTR_RSTRIP if on else 0)
        return specials

    def _make_encoder(self, md: dict[str, Any]) -> tuple[SPM | None, BPE | None]:
        """The fragment encoder: SentencePiece by scores (llama) or byte-level BPE by merges (gpt2)."""
        n = self.n_vocab
        if self.model == "llama":
            scores = get_key(md, KEY_TOKENIZER_SCORES) or [0.0] * n  # one per token (check_vocab)
            byte_ids: list[int | None] = []
            for b in range(256):
                tid = self.token_to_id.get(f"<0x{b:02X}>")
                if tid is None and b < 0x80:  # llama.cpp falls back to the one-byte token
                    tid = self.token_to_id.get(chr(b))
                byte_ids.append(tid)
            return SPM(self.token_to_id, scores, byte_ids), None
        family, _, ignore_merges, _ = PRE_TOKENIZERS[self.pre]
        merges = md[KEY_TOKENIZER_MERGES]  # present (check_vocab)
        return None, BPE(self.token_to_id, merges, family, ignore_merges)

    @classmethod
    def from_gguf_metadata(cls, metadata: dict[str, Any]) -> Tokenizer:
        return cls(metadata)

    @classmethod
    def from_gguf(cls, gguf: Any) -> Tokenizer:
        """From a runtime.gguf.GGUFFile, or a path to a GGUF file."""
        if hasattr(gguf, "metadata"):
            return cls(gguf.metadata)
        from .gguf import GGUFFile
        with GGUFFile(gguf) as f:
            return cls(f.metadata)

    def _find(self, names: Iterable[str]) -> int | None:
        """The lowest id among tokens with one of `names` as text; it becomes CONTROL."""
        found = [self.token_to_id[t] for t in names if t in self.token_to_id]
        if not found:
            return None
        tid = min(found)
        self.attrs[tid] |= ATTR_CONTROL
        return tid

    # --- text -> ids ---------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True,
                 parse_special: bool = False) -> list[int]:
        """llama.cpp's llama_tokenize: BOS/EOS added when add_special and the vocabulary says so;
        special tokens written in the text recognised when parse_special."""
        if not isinstance(text, str):
            raise TypeError(f"tokenize() takes str, not {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # surrogates: pairs joined, lone ones -> U+FFFD
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        fragments = self._partition(text, parse_special) if text else []
        out: list[int] = []
        if add_special and self.add_bos:
            if self.bos_id is None:
                raise TokenizerError("tokenizer: the vocabulary adds BOS but has no BOS token")
            out.append(self.bos_id)
        if self._spm is not None:
            prev_special = True  # a space is added before the first fragment and after specials
            for frag in fragments:
                if isinstance(frag, int):
                    out.append(frag)
                    prev_special = True
                    continue
                if self.add_space_prefix and prev_special:
                    frag = " " + frag
                try:
                    out += self._spm.encode(frag.replace(" ", SPACE))
                except KeyError as e:
                    raise TokenizerError(f"tokenizer: {e.args[0]} in the vocabulary") from None
                prev_special = False
        else:
            assert self._bpe is not None
            for frag in fragments:
                if isinstance(frag, int):
                    out.append(frag)
                else:
                    out += self._bpe.encode(frag)
        if add_special and self.add_eos:
            if self.eos_id is None:
                raise TokenizerError("tokenizer: the vocabulary adds EOS but has no EOS token")
            out.append(self.eos_id)
        return out

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Raw text fragments (str) and special tokens (int), in order."""
        frags: list[str | int] = [text]
        for tid in self._specials:
            attr = self.attrs[tid]
            if not parse_special and attr & (ATTR_CONTROL | ATTR_UNKNOWN):
                continue
            special = self.tokens[tid]
            if not any(isinstance(f, str) and special in f for f in frags):
                continue
            out: list[str | int] = []
            for frag in frags:
                if isinstance(frag, int) or special not in frag:
                    out.append(frag)
                    continue
                pos = 0
                while (hit := frag.find(special, pos)) >= 0:
                    left = frag[pos:hit]
                    if attr & ATTR_LSTRIP:
                        left = left.rstrip(_C_SPACES)
                    if left:
                        out.append(left)
                    out.append(tid)
                    pos = hit + len(special)
                    if attr & ATTR_RSTRIP:
                        while pos < len(frag) and frag[pos] in _C_SPACES:
                            pos += 1
                if pos < len(frag):
                    out.append(frag[pos:])
            frags = out
        return frags

    # --- ids -> text ---------------------------------------------------------------------

    def token_to_piece(self, token_id: int, special: bool = False) -> bytes:
        """llama.cpp's llama_token_to_piece (lstrip 0): the bytes of one token.

        CONTROL and UNKNOWN tokens are empty unless `special`; USER_DEFINED tokens are their text;
        SentencePiece pieces have "▁" as space; byte tokens are their byte; BPE pieces are
        byte-decoded; unused/undefined tokens are empty."""
        if not 0 <= token_id < self.n_vocab:
            raise TokenizerError(f"tokenizer: token id {token_id} out of range [0, {self.n_vocab})")
        if not special and self.attrs[token_id] & (ATTR_CONTROL | ATTR_UNKNOWN):
            return b""
        piece = self._pieces[token_id]
        if piece is None:
            piece = self._pieces[token_id] = self._make_piece(token_id)
        return piece

    def _make_piece(self, token_id: int) -> bytes:
        attr, text = self.attrs[token_id], self.tokens[token_id]
        if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED):
            return text.encode("utf-8")
        if attr & ATTR_NORMAL:
            if self.model == "llama":
                return text.replace(SPACE, " ").encode("utf-8")
            return decode_piece(text)
        if attr & ATTR_BYTE:
            return bytes([_hex_byte(text[3:5])])
        return b""

    def detokenize(self, ids: Iterable[int], special: bool = False,
                   remove_special: bool = False) -> str:
        """llama.cpp's llama_detokenize(ids, remove_special, unparse_special=special), decoded
        as UTF-8 (invalid bytes -> U+FFFD). See the module docstring for the leading space."""
        ids = list(ids)
        remove_space = self.add_space_prefix
        if remove_special and self.add_bos and ids and ids[0] == self.bos_id:
            remove_space = False
            ids = ids[1:]
        if remove_special and self.add_eos and ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        out = bytearray()
        for tid in ids:
            piece = self.token_to_piece(tid, special)
            if remove_space and piece[:1] == b" ":
                piece = piece[1:]
            remove_space = False
            out += piece
        if self.clean_spaces:
            out = _clean_spaces(out)
        return out.decode("utf-8", errors="replace")

    def decoder(self, special: bool = False) -> StreamDecoder:
        """A streaming detokenizer: feed ids one at a time, get text as soon as it is whole."""
        return StreamDecoder(self, special)

    def is_eog(self, token_id: int) -> bool:
        """End of generation: EOS, EOT, EOM and the other end markers llama.cpp stops on."""
        return token_id in self.eog_ids

    def __repr__(self) -> str:
        kind = self.model if self.model == "llama" else f"gpt2/{self.pre}"
        return f"<Tokenizer {kind} n_vocab={self.n_vocab} bos={self.bos_id} eos={self.eos_id}>"


class StreamDecoder:
    """Token pieces -> text, holding back an incomplete UTF-8 character until its last byte.

    The output is the concatenation of token_to_piece(id, special) decoded as UTF-8: no leading
    space removal and no clean-up pass (what llama.cpp's examples and server stream). Bytes that
    can never be valid UTF-8 come out as U+FFFD."""

    def __init__(self, tokenizer: Tokenizer, special: bool = False) -> None:
        self.tokenizer = tokenizer
        self.special = special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._utf8.decode(self.tokenizer.token_to_piece(token_id, self.special))

    def flush(self) -> str:
        """Whatever is held back (an unfinished character becomes U+FFFD); resets the decoder."""
        return self._utf8.decode(b"", final=True)


def _hex_byte(text: str) -> int:
    """strtol(text, 16) of a byte token's two hex digits; 0 when they are not hex."""
    try:
        return int(text, 16) & 0xFF
    except ValueError:
        return 0


def _clean_spaces(text: bytearray) -> bytearray:
    """llama.cpp's clean_up_tokenization_spaces, its three passes over the bytes as written."""
    # " ?" " !" " ." " ,": drop the space
    n = len(text)
    total = 1 if n else 0
    for i in range(1, n):
        x = text[i]
        if text[i - 1] == 0x20 and x in b"?!.,":
            total -= 1
        text[total] = x
        total += 1
    # " ' ": drop both spaces (the one after is zeroed and skipped)
    n, total, i = total, 1 if total else 0, 1
    while i < n:
        x = text[i]
        if x == 0x27 and i + 1 < n and text[i - 1] == 0x20 and text[i + 1] == 0x20:
            total -= 1
            i += 1
            text[i] = 0
        text[total] = x
        total += 1
        i += 1
    # " 's" " 'm" " 're" " 've": drop the space
    n, total = total, 1 if total else 0
    for i in range(1, n):
        x = text[i]
        if text[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
            x1 = text[i + 1]
            if x1 in b"sm":
                total -= 1
            elif x1 not in b"td" and i + 2 < n:
                x2 = text[i + 2]
                if (x1, x2) in ((0x72, 0x65), (0x76, 0x65)):  # "re", "ve"
                    total -= 1
        text[total] = x
        total += 1
    del text[total:]
    return text

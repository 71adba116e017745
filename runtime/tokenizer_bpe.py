r"""Byte-level BPE: llama.cpp's `gpt2` vocabulary type (llm_tokenizer_bpe, llama-vocab.cpp).

Text -> words -> ids, per raw fragment (special tokens are split off before this):
  1. pre-tokenize: the regexes of `tokenizer.ggml.pre`, each one splitting every piece the previous
     ones produced into its matches and the gaps between them (llama.cpp's unicode_regex_split);
  2. each word's UTF-8 bytes become printable characters (GPT-2's byte-to-unicode table);
  3. merges: repeatedly join the adjacent pair with the lowest merge rank, leftmost first;
  4. each resulting symbol is looked up in the vocabulary.

Unicode classes. llama.cpp does not use a regex library's \p{L}/\p{N}: it has its own table of
general categories (src/unicode-data.cpp, generated from UCD 15.1) and hand-written matchers for
the gpt2 / llama3 / qwen2 expressions. `_UNICODE_BLOB` below is that table, compressed; the regexes
here are built from it with explicit character classes, so the standard `re` module matches the
same characters whatever Unicode version Python itself ships. `tools/make_tokenizer_fixtures.py
unicode-table` regenerates the blob from a llama.cpp checkout.

Where llama.cpp's hand-written matchers differ from the textbook regex (they do, in corners),
the expressions here follow the matchers; see `_expressions`.
"""

from __future__ import annotations

import base64
import bisect
import re
import zlib
from functools import lru_cache

from .tokenizer_cache import WordCache, merge_pairs

# --- Unicode categories (llama.cpp's unicode_cpt_flags, one category per code point) -----------

CAT_UNDEFINED, CAT_NUMBER, CAT_LETTER, CAT_SEPARATOR = 0, 1, 2, 3
CAT_MARK, CAT_PUNCTUATION, CAT_SYMBOL, CAT_CONTROL = 4, 5, 6, 7
MAX_CODEPOINT = 0x110000

# zlib + base85 of (LEB128 start delta, category) per range of equal category, from U+0000 on.
_UNICODE_BLOB = (
    "c-oDZNr+}w701s#?+)*qYaY5&RbN%AtJ7UwT|IY4+t{W}OVbhsu|vCXz^FKY0R=%fO%St)5hdUvi+}@J2twSb?W&Ok!2"
    "u#@a3K-|2T+2mCX1l{&Uvqfjv8Ft@4fH7d(S<?|NPInQpQzCRSqdLV(2E#RZ>0Rb0G)bLi1KuD|;q}YBLjZ49c3ot`O`"
    "QLY0EfGq=L{d6lE~^H5VRYQjREjF0gzsETT2X^_~6(@N}L&>6=2Sn(tqV$tVpZbNKM)+331nU!%Xg~+a`?FdrqL5avz>"
    "6L6oWK&CHFQI6vbTiIkUgX%IAGMQXDRu<MN7hEZgsxVu%~06GilEE!AZOo*J#-uLeKmH}Bv<@L607If8JG=`xtK)L2#p"
    "tG#hdBglcWpSlaZ;CW35NyLJ4tI&-soi(?q*i!TIPl5zP}dr<#xEcrWgmN~4`<t9kOxc1w-rXwHht=FkwELvDN;O-GZK"
    "ea)UU-5p32(>gX1rQ(0#Bs;MLv_dYDr0a4z(!^=MoYZPnBd7Ag*)mdX^f90y5kEKI|HHEVGIlMK!nn&WLr=))(V!&b50"
    "e&oYKt88cbl)Yk3|V<Orz);fmI?n$h9OuQn!}OGbVOV5AFIA{bb*#JC;ZR-o^BY2J-z9x_8;IUrKKL+)A*wAbp&@<H;i"
    "iyS+V@CD@J60ZU`~bb}rD-4vEBv~e)aipMLuZ!M0sWKL1b2<hvIXy+9&3{S@z?MZJrwCk_LSZLq7zP961Q!{5;nKXPnM"
    "z1Q3oCwegu9zWX!p=yRJm!yebeXY?)D(M2SeKANXhy%RDdp(rZ^julU9x62M$dxEG{xemgV?vs1ACU58?H-oy*Basuhf"
    "ICZBjJvN80D=fB9y~cz^qT*`Sp=VFou&<SxOv&TO_s)xSrxPA4m)JVVj7RD}wwicS&Bj!v^xc}@|Pz7CrB`TLnTHa;-Q"
    "RL?oQW^u@=7pvm7aMTSX8U3uq#-c0I)fFTdQu`Josf+=1*(1=?W8mNba(YtbHJx{6Q9T<$QCu>t?VeJM8<|;=lQ?)gPN"
    "H>%e@pJhPVS(!`FA-EoZ*heq0}g{9&rO~-nEQjejVu@bll|pD%CIxD37zm2mCoYD%bmVh?n%6+BnXc*`9Ul@}055+*!+"
    "TXZ<EuOLh)3H1jsdmS4?08dklM(n6&Lw<pk*28@0c3TQ0d;CK(t>xLbBvU7lMR%H|!#(3HCN449YNlk03PBSbIdPes-@"
    "y&BBoNfvW{(p_=<RwbR>p>QCPiDi#{BW4de~oDvmh(xztfX#!x=M5T?JONLamUKh7;`?Ue=^cFEUP36DYfS=>|QVqBrA"
    "u}7^CA5eUkyAwpl+WYx=U54{*c{>F1Y&9LN(*#Wp{n4+}7(gH0qf_M(7QXvADMBFGlZpdUz<0g2!S{h%cyeB9M>UY8z{"
    "Ci04<dR`7SvPOB#`(d89Rd1ipm-MOc1I~ONwU1-gQwrKAtkTE~Xrqcpt6M8z`-)Wzuvq7L?Qrxb7?(J9k8u{LZ^r4taR"
    "sWO0EFYbNRFII5!|Vsic?_J^N9MGJ-eJcIrScxOxZaQD!VR;amIEWCd)|62~vPa!f32b&aguiw-f7@g)I%|bHh5PoU@I"
    "6)Uz{qb}p#ltQS*KXW_16ycv73+r)K4!;XH=*tM0O^}CNi3iC{#lvr*)sIOYGd`dRh)JLV{hZsl)EeVHxCHXUXQYQ3o<"
    "a(aKcdF-v9D;%Scxob<M<&v}LXXn0v3M(%ObZkB1Yj%3`~P}6sN)9dzh|5!WR)?F(JeGX%=8fp0Cl?6aKzkD*7QpNogy"
    "8!*wG31=gHu$S+=AMvYodG?BgCG95Etx)}M`oap?^CTnEdIjc5*8HY==ps8y*XNA=m3Mt#!8eKdGyJmfvsVXt|(`~PMA"
    "k+Jj~F{_CqT%$+5Vm{>NnX8Yry@KWCyqz3s@Ss%O6{$l<PPC>b+&V|kVF`2qV}o2GkBtg7&@+VN+Ei^;S{-XE`jYoApc"
    "+Xf8KW)*D=<r;B8ns!2qsz~rGlR4kY3PM(P5esYifKU3;LnRd-bZE*V8g!(5k}NWCu=pPQyxLmKS<!r>+6vB>-=2@LcT"
    "C(IuI)!iA^}okiG;(GIK5#t{d{u<Vp>4(Xu$7Hu-PNtTS=Vlo%4{R3<j#}17hlC`<&C)^v2-h#_J5r;J0(P_ZSiv<$&v"
    "15iJHs!5wKQ#p;$OHRoa}zbFgD7uP0+XK?|7VLB+E!_&McirXk|nNKqf-H<Cj%x<p;Gd0$Gc$SvW%iLMvZ2G`7m&%$?B"
    "wewdQw?1(V*^_q?bMWST~0;G}J3_8iv>jUznQclIrE3nbypAdl*$FimRLZNFHzDld3nW~#-8R|r=n9fV!+wTE4S(zpym"
    "4)WX8`)mex)_$i6+&qqx@y37&BwPg@UAfb=fQP*4uKiOtELj6#?L)+G#O&&>?>11R@&?gbf#QeNo?W?JF^;MInwrL6ey"
    "DUj)~}V86^*Rc8Yia#3$9z2A7=BC4AB3XA|DT*71N}rF9iAJjDCd81AV?O6W&3L<a;anvnaPN>n(a?^^)Uk{T^vLBvak"
    "8tV<}0b&GaGgi5;BIR`UlmS9iI^9hH~gY1v#HA^(qJCB;QjwGnI&g@~$P+!}|hc9;^l#cx6AqU-#Q@*2IQi3eCZ9XVw="
    "~pZH@|1p>V_-3FhbR}>^Q=Vq{dzo(jwDk4yj;w8P%R(k`$fuF6?3U$O%G7=GOg>|WHvt-jS0U<CiHFOM+p9+JQ4K$od2"
    "%o{?*(tyvq(wwV~DV9c|NExBu^HlP0ydL7V%HZCnJ6i|vj3&7MFmoXR(2JWrOL^1gf+y)TEIE&L;SsU|Fjir+SOl1Wdi"
    "78p3?0a?Yhk13Q7jEYlqb7!GdfKg<Ul%V1WSA2P?g6ZtfpOY&ack4&c7meOK$UdU)G(bvhupr;a;jQ!__>DsG?yzP3i2"
    "StKe6SS|S|0DVLYtm5o0PkH(CQ8A-#B)@?Vuv=lV`FgvAAkIJ}GA?hF{Z6Tb>^!mQ+DT@No!;4)V8xT(E5LB|wMuLvB9"
    "Lg#0_ZgH2Kvtu%gt_YX<VP0v5_=LI?@G9XjrGFiaRhcmJ5=OKS=lZiX-Rk>!a5pUyZbfqyng!jHu>nq%j#`=>nzW9R~_"
    "V^aC{=r+o`KwXBJ+041`D0Iiv4LH$jOEuq-h}Cw%ZKG=i2n%k_1CNN&wr5({`+rtGqvF"
)

# llama.cpp's \s: the White_Space property (unicode-data.cpp, unicode_set_whitespace).
WHITESPACE = frozenset([*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                        0x2028, 0x2029, 0x202F, 0x205F, 0x3000])


@lru_cache(maxsize=1)
def category_ranges() -> tuple[list[int], list[int]]:
    """(starts, categories): code point c has categories[bisect_right(starts, c) - 1]."""
    raw = zlib.decompress(base64.b85decode("".join(_UNICODE_BLOB)))
    starts: list[int] = []
    cats: list[int] = []
    pos = start = 0
    while pos < len(raw):
        delta = shift = 0
        while True:
            byte = raw[pos]
            pos += 1
            delta |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        start += delta
        starts.append(start)
        cats.append(raw[pos])
        pos += 1
    return starts, cats


def category(cp: int) -> int:
    """llama.cpp's category of code point `cp` (CAT_*)."""
    starts, cats = category_ranges()
    return cats[bisect.bisect_right(starts, cp) - 1]


def _class_body(cats: set[int]) -> str:
    """The inside of a regex character class matching every code point of categories `cats`."""
    starts, codes = category_ranges()
    parts = []
    for i, (start, cat) in enumerate(zip(starts, codes)):
        if cat in cats:
            end = (starts[i + 1] if i + 1 < len(starts) else MAX_CODEPOINT) - 1
            parts.append(_esc(start) if start == end else f"{_esc(start)}-{_esc(end)}")
    return "".join(parts)


def _esc(cp: int) -> str:
    return f"\\U{cp:08x}"


@lru_cache(maxsize=None)
def _expressions(family: str) -> tuple[re.Pattern[str], ...]:
    """The compiled pre-tokenizer regexes of a family, applied in order.

    L, N, P: llama.cpp's letter / number / punctuation categories; W: its whitespace set.
    The gpt2, llama3 and qwen2 expressions are written to behave as llama.cpp's hand-written
    matchers (unicode_regex_split_custom_*), which means:
      - whitespace: `W+(?!\\S)` then `W+`, in that order, in all three (the gpt2 string in
        llama-vocab.cpp omits the trailing `\\s+`, its matcher has it);
      - contractions: ASCII letters only (llama.cpp lowercases with its own table, in which only
        A-Z map onto the letters involved);
      - every piece is matched on its own: lookaheads and "end of text" stop at the piece's end.
    The other expressions (smollm's digit split, the default pre-tokenizer's punctuation, digit
    and three-digit splits) go through std::regex in llama.cpp, on the same categories.
    """
    L = _class_body({CAT_LETTER})
    N = _class_body({CAT_NUMBER})
    W = "".join(_esc(c) for c in sorted(WHITESPACE))
    gpt2 = (rf"'(?:[stmd]|re|ve|ll)| ?[{L}]+| ?[{N}]+| ?[^{W}{L}{N}]+"
            rf"|[{W}]+(?![^{W}])|[{W}]+")
    contractions = r"'(?:[sStTmMdD]|[rR][eE]|[vV][eE]|[lL][lL])"
    llama3 = (rf"{contractions}|[^\r\n{L}{N}]?[{L}]+|[{N}]{{1,3}}| ?[^{W}{L}{N}]+[\r\n]*"
              rf"|[{W}]*[\r\n]+|[{W}]+(?![^{W}])|[{W}]+")
    qwen2 = (rf"{contractions}|[^\r\n{L}{N}]?[{L}]+|[{N}]| ?[^{W}{L}{N}]+[\r\n]*"
             rf"|[{W}]*[\r\n]+|[{W}]+(?![^{W}])|[{W}]+")
    if family == "gpt2":
        exprs = [gpt2]
    elif family == "smollm":
        exprs = [f"[{N}]", gpt2]
    elif family == "llama3":
        exprs = [llama3]
    elif family == "qwen2":
        exprs = [qwen2]
    elif family == "default":
        P = _class_body({CAT_PUNCTUATION})
        exprs = [rf"[{P}$+<=>^~|]+", gpt2, f"[{N}]+", "[0-9][0-9][0-9]"]
    else:
        raise KeyError(family)
    return tuple(re.compile(e) for e in exprs)


# Pre-tokenizer names (`tokenizer.ggml.pre`) -> (regex family, clean_spaces, ignore_merges,
# add_bos default), as llama.cpp's llama_vocab::impl::load sets them. Only names whose whole
# behaviour is covered here are listed; the rest are refused with TokenizerError upstream.
PRE_TOKENIZERS: dict[str, tuple[str, bool, bool, bool]] = {
    "default": ("default", True, False, False),
    **{name: ("llama3", True, True, True) for name in (
        "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2")},
    "dbrx": ("llama3", True, False, False),
    "smaug-bpe": ("llama3", True, False, False),
    **{name: ("gpt2", True, False, False) for name in (
        "gpt-2", "phi-2", "gigachat", "a.x-4.0", "mellum", "mpt", "olmo", "jais", "exaone4")},
    "trillion": ("gpt2", False, False, False),
    "granite-docling": ("gpt2", False, False, False),
    **{name: ("smollm", True, False, False) for name in (
        "starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2")},
    "command-r": ("smollm", False, False, False),
    "smollm": ("smollm", False, False, False),
    **{name: ("qwen2", False, False, False) for name in (
        "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open")},
    "megrez": ("qwen2", True, False, False),
    "stablelm2": ("qwen2", True, False, False),
}


PIECE_CHARS = 1 << 16  # characters per regex call: tens of milliseconds with the GIL held


@lru_cache(maxsize=None)
def _cut_points() -> re.Pattern[str]:
    """A letter followed by a space or a newline: where every family's words part (see pre_tokenize)."""
    return re.compile(f"[{_class_body({CAT_LETTER})}][ \n]")


def pre_tokenize(family: str, text: str) -> list[str]:
    """Split `text` into words with the family's regexes (llama.cpp's unicode_regex_split).

    A long text goes in pieces of about PIECE_CHARS: one regex call over megabytes holds the GIL
    for seconds, and the server's other requests (/health too) wait that long. A piece ends after
    a letter that a space or newline follows, where the words part whatever comes next: every
    expression that matches a letter ends at the end of its run of letters (no lookahead there
    reaches the next character), nothing looks behind, and the number and punctuation passes of
    the multi-expression families never hold a letter. tests/test_tokenizer.py checks the pieces'
    words equal the whole text's."""
    if len(text) <= PIECE_CHARS:
        return _pre_tokenize(family, text)
    words: list[str] = []
    start = 0
    search_from = PIECE_CHARS
    while search_from < len(text):
        m = _cut_points().search(text, search_from, search_from + PIECE_CHARS)
        if m is None:  # no place to cut in this stretch: the piece goes on
            search_from += PIECE_CHARS
            continue
        words += _pre_tokenize(family, text[start:m.start() + 1])
        start = m.start() + 1
        search_from = start + PIECE_CHARS
    words += _pre_tokenize(family, text[start:])
    return words


def _pre_tokenize(family: str, text: str) -> list[str]:
    exprs = _expressions(family)
    if len(exprs) == 1:
        return exprs[0].findall(text)  # these expressions match every character: no gaps
    pieces = [text]
    for expr in exprs:
        out: list[str] = []
        for piece in pieces:
            pos = 0
            for m in expr.finditer(piece):
                start, end = m.span()
                if start > pos:
                    out.append(piece[pos:start])
                out.append(piece[start:end])
                pos = end
            if pos < len(piece):
                out.append(piece[pos:])
        pieces = out
    return pieces


# --- GPT-2 byte <-> printable character table ----------------------------------------------

def _byte_chars() -> list[str]:
    """Byte b -> a printable character: itself for !..~, ¡..¬, ®..ÿ; others from U+0100 on."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


BYTE_TO_CHAR = _byte_chars()
CHAR_TO_BYTE = {c: b for b, c in enumerate(BYTE_TO_CHAR)}
_LATIN1_TO_CHARS = {b: c for b, c in enumerate(BYTE_TO_CHAR)}  # str.translate table


def decode_piece(text: str) -> bytes:
    """A token's text back to bytes (llama.cpp's llama_decode_text).

    A character outside the table (not a byte-level token) becomes llama.cpp's marker
    "[UNK_BYTE_0x<its UTF-8 in hex><the whole token text>]"."""
    out = bytearray()
    for ch in text:
        b = CHAR_TO_BYTE.get(ch)
        if b is not None:
            out.append(b)
        else:
            out += b"[UNK_BYTE_0x" + ch.encode("utf-8").hex().encode() + text.encode("utf-8") + b"]"
    return bytes(out)


class BPE:
    """Word -> ids for one vocabulary: merge ranks, a per-word cache."""

    def __init__(self, token_to_id: dict[str, int], merges: list[str], family: str,
                 ignore_merges: bool) -> None:
        self.token_to_id = token_to_id
        # "a b" -> rank; llama.cpp splits at the first space after the first character and
        # keeps the first rank of a repeated pair. Lookups join the pair with one space, which
        # finds the same string (tokens of a byte-level vocabulary hold no spaces).
        self.ranks = dict(zip(reversed(merges), range(len(merges) - 1, -1, -1)))
        self.family = family
        self.ignore_merges = ignore_merges
        _expressions(family)  # compile now rather than on the first call
        self._words = WordCache(self._encode_word)

    def encode(self, text: str) -> list[int]:
        return self._words.encode(pre_tokenize(self.family, text))

    def _encode_word(self, word: str) -> list[int]:
        vocab = self.token_to_id
        chars = word.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_CHARS)
        if self.ignore_merges and chars in vocab:
            return [vocab[chars]]
        ids: list[int] = []
        for sym in self._merge(chars):
            tid = vocab.get(sym)
            if tid is not None:
                ids.append(tid)
            else:
                # llama.cpp looks up each byte of the symbol's text as a one-byte token;
                # only ASCII can be one (token texts are valid UTF-8), the rest is dropped.
                for b in sym.encode("utf-8"):
                    tid = vocab.get(chr(b)) if b < 0x80 else None
                    if tid is not None:
                        ids.append(tid)
        return ids

    def _merge(self, chars: str) -> list[str]:
        """Apply merges: lowest rank first, leftmost on ties (llama.cpp's bigram queue)."""
        ranks = self.ranks
        return merge_pairs(chars, lambda a, b: ranks.get(a + " " + b))

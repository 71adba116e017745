"""GBNF parsing and matching: hand-checked accept/reject cases (byte strings, multi-byte characters
split across tokens), errors with line and column, and GrammarConstraint's Constraint contract on
the real SmolLM2 vocabulary. Python's `re` is the oracle for the regular-language cases."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.grammar import GrammarConstraint, GrammarError, compile_grammar, parse_grammar
from runtime.grammar.matcher import DEAD, NO_PARTIAL, decode_utf8
from runtime.tokenizer import Tokenizer


def matches(grammar: str, text: str | bytes) -> bool:
    data = text.encode() if isinstance(text, str) else text
    return compile_grammar(grammar).match(data)


@pytest.mark.parametrize("grammar, yes, no", [
    ('root ::= "ab" | "c"', ["ab", "c"], ["", "a", "abc", "b"]),
    ('root ::= [a-c]+ "!"?', ["a", "abc!", "cc"], ["", "!", "ad", "a!!"]),
    ('root ::= [^a-c\\n]*', ["", "xyz", "é日"], ["a", "x\ny"]),
    ('root ::= "x"{3}', ["xxx"], ["xx", "xxxx"]),
    ('root ::= "x"{2,}', ["xx", "xxxxxx"], ["x"]),
    ('root ::= "x"{1,3} "y"{0,1}', ["x", "xxxy", "xy"], ["", "xxxx", "yy"]),
    ('root ::= ( "a" | "b" "c" )* "."', [".", "abc.", "bcbca."], ["b.", "abc"]),
    ('root ::= . . "\\x41\\u00e9\\U0001F600"', ["ab" + "A\u00e9\U0001F600", "日本Aé😀"], ["aAé😀"]),
    ('root ::= "\\"" [^"\\\\]* "\\""  # a string', ['""', '"a b"'], ['"a"b"', '"a\\"']),
    ('root ::= [\\]\\-\\[] [\\t\\r]', ["]\t", "-\r", "[\t"], ["a\t"]),
    ('root ::= a b\na ::= | "x"\nb ::= "y" b | "z"', ["z", "xz", "yyz", "xyz"], ["x", "xx"]),
    ('root ::= ( "a"\n   | "b" )\n\n# trailing comment', ["a", "b"], ["ab"]),
    ('root ::= [α-ω]+ "日本"', ["αβ日本"], ["a日本", "α日"]),
    ('root ::= ("x"?)*', ["", "xxx"], ["y"]),
])
def test_accepts_and_rejects(grammar: str, yes: list[str], no: list[str]) -> None:
    for text in yes:
        assert matches(grammar, text), text
    for text in no:
        assert not matches(grammar, text), text


PATTERNS = [("root ::= [a-c]{1,3} ( \"-\" [0-9]+ )* \"!\"?", r"[a-c]{1,3}(-[0-9]+)*!?"),
            ("root ::= ( \"ab\" | [^ab] )* \"b\"", r"(ab|[^ab])*b")]


@pytest.mark.parametrize("grammar, regex", PATTERNS)
@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="abc-019!x", max_size=10))
def test_regular_grammars_agree_with_re(grammar: str, regex: str, text: str) -> None:
    """Python's re.fullmatch is the oracle for grammars that are regular."""
    m = compile_grammar(grammar)
    assert m.match(text.encode()) == bool(re.fullmatch(regex, text, re.S))
    prefix_ok = m.match_prefix(text.encode())
    assert prefix_ok or not m.match(text.encode())


@pytest.mark.parametrize("grammar, where, what", [
    ('root ::= "a" valu', "line 1, column 14", "undefined rule 'valu'"),
    ('root ::= "a"\nx ::= "b"\n\nroot2 ::= [a-z', "line 4, column 11", "unterminated character class"),
    ('root ::= "a\\q"', "line 1, column 12", "unknown escape '\\q'"),
    ('root ::= x\nx ::= x "a" | "b"', "line 2, column 1", "left recursion in rule 'x'"),
    ('root ::= e\ne ::= ( "a" )* e "b"', "line 2, column 1", "left recursion in rule 'e'"),
    ('root ::= ( "a"', "line 1, column 15", "expected ')'"),
    ('root ::= *', "line 1, column 10", "no item before it"),
    ('root ::= "a"{3', "line 1, column 15", "expected '}'"),
    ('rot ::= "a"', "line 1, column 1", "no 'root' rule"),
    ('root = "a"', "line 1, column 6", "expected '::='"),
    ('root ::= "\\x4"', "line 1, column 11", "2 hex digits"),
    ('', "line 1, column 1", "empty grammar"),
    ('root ::= "a"\nroot ::= "b"', "line 2, column 1", "defined twice"),
    ('root ::= "a"{2001}', "line 1, column 13", "above 2000"),
    ('root ::= [z-a]', "line 1, column 14", "reversed"),
    ('root ::= <[12]>', "line 1, column 10", "token references"),
])
def test_errors_name_the_fault_and_place(grammar: str, where: str, what: str) -> None:
    with pytest.raises(GrammarError) as err:
        parse_grammar(grammar)
    assert str(err.value).startswith(where + ": "), str(err.value)
    assert what in str(err.value)


def test_decode_follows_llama_cpp_partial_characters() -> None:
    assert decode_utf8("é日".encode()) == ([0xE9, 0x65E5], NO_PARTIAL)
    cps, partial = decode_utf8(b"a\xe6\x97")                  # 日 cut after two bytes
    assert cps == [0x61] and partial == (0x6 << 6 | 0x17, 1)
    assert decode_utf8(b"\xa5", partial) == ([0x65E5], NO_PARTIAL)
    assert decode_utf8(b"\x80") is None                       # a continuation byte cannot start
    assert decode_utf8(b"a", partial) is None                 # a continuation byte was due


def test_characters_split_across_tokens() -> None:
    m = compile_grammar('root ::= "<" [ぁ-ゖ]+ ">"')       # hiragana: E3 81 81 .. E3 82 96
    state = m.feed(m.start, NO_PARTIAL, b"<")
    half = m.feed(*state, b"\xe3\x81")
    assert half[0] != DEAD and half[1] != NO_PARTIAL
    assert m.feed(*half, b"\x81>")[0] != DEAD                   # ぁ completed, then ">"
    assert m.feed(*state, b"\xe6")[0] == DEAD                   # E6 starts 日-range: never hiragana
    assert m.feed(*half, b"a")[0] == DEAD                       # a continuation byte was due
    assert not m.match(b"<\xe3\x81>")                           # a half character never matches


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> Tokenizer:
    return Tokenizer.from_gguf(smollm2_path)


def test_constraint_contract(smollm2: Tokenizer) -> None:
    """mask sets rejected tokens to -inf and leaves the others; advance refuses a rejected token;
    EOG only when matched; done when nothing may follow."""
    c = GrammarConstraint('root ::= "yes" | "no" | "maybe" "!"?', smollm2)
    logits = np.zeros(smollm2.n_vocab, dtype=np.float32)
    out = c.mask(logits)
    allowed = np.flatnonzero(np.isfinite(out))
    pieces = {smollm2.token_to_piece(int(i)) for i in allowed}
    assert pieces and all(b"yes".startswith(p) or b"no".startswith(p) or b"maybe!".startswith(p) for p in pieces)
    assert not any(smollm2.is_eog(int(i)) for i in allowed)
    yes = smollm2.tokenize("yes", add_special=False)
    assert len(yes) == 1
    no_tok = smollm2.tokenize("?", add_special=False)[0]
    with pytest.raises(ValueError):
        c.advance(no_tok)
    c.advance(yes[0])
    assert c.done
    c2 = GrammarConstraint('root ::= "yes" | "no" | "maybe" "!"?', smollm2)
    c2.advance(smollm2.tokenize("maybe", add_special=False)[0])
    assert not c2.done                                           # "!" may still follow
    eog = [i for i in np.flatnonzero(c2.allowed()) if smollm2.is_eog(int(i))]
    assert eog
    c2.advance(int(eog[0]))
    assert c2.done and not c2.allowed().any()


def test_control_tokens_never_allowed(smollm2: Tokenizer) -> None:
    """<|im_start|>'s text fits `.*`; llama.cpp would allow it, llamapack does not."""
    c = GrammarConstraint("root ::= .*", smollm2)
    ok = c.allowed()
    im_start = smollm2.tokenize("<|im_start|>", add_special=False, parse_special=True)
    assert len(im_start) == 1 and not ok[im_start[0]]
    assert ok[smollm2.tokenize("hello", add_special=False)[0]]


def test_random_walks_stay_in_the_grammar(smollm2: Tokenizer) -> None:
    """Sampling random allowed tokens until done/EOG yields text the grammar matches."""
    grammar = 'root ::= "[" item ( ", " item ){0,4} "]"\nitem ::= [a-z]{1,5} | "日本" | [0-9]+'
    m = compile_grammar(grammar)
    rng = np.random.default_rng(0)
    for _ in range(10):
        c = GrammarConstraint(grammar, smollm2)
        out, ended = b"", False
        for _ in range(60):
            ids = np.flatnonzero(c.allowed())
            assert len(ids)
            t = int(rng.choice(ids))
            c.advance(t)
            if smollm2.is_eog(t):
                ended = True
                break
            out += smollm2.token_to_piece(t)
            if c.done:
                ended = True
                break
        assert m.match(out) if ended else m.match_prefix(out), out


def test_exponentially_ambiguous_grammar_is_refused_not_followed() -> None:
    """Each "a" may close with "b", "c" or nothing: 3^n stacks. llama.cpp follows them all
    (and stalls); llamapack stops with an error once more than MAX_STACKS are alive."""
    m = compile_grammar('root ::= x\nx ::= "a" x "b" | "a" x "c" | "a" x | "d"')
    assert m.match(b"aad" + b"bc")
    with pytest.raises(GrammarError, match="too ambiguous"):
        m.match(b"a" * 40)

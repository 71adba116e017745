"""The grammar engine against llama.cpp's grammar sampler (recorded by tools/make_grammar_fixtures.py
into tests/fixtures/grammar/llama_cpp_masks.json): for each grammar and output so far, the set of
allowed tokens of the real SmolLM2 (49k) and Mistral (32k) vocabularies is exactly llama.cpp's,
control tokens aside (llama.cpp matches their text, llamapack never allows them); llama.cpp's
accept/refuse of grammars; and llama.cpp's own JSON Schema converter, by acceptance."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from runtime.grammar import GrammarConstraint, GrammarError, compile_grammar, json_schema_to_gbnf, parse_grammar
from runtime.tokenizer import ATTR_CONTROL, ATTR_UNKNOWN, Tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
DOC = json.loads((FIXTURES / "grammar" / "llama_cpp_masks.json").read_text(encoding="utf-8"))
# Refused by llamapack, accepted by llama.cpp: the empty grammar (llama.cpp then constrains nothing)
STRICTER = {""}


@pytest.fixture(scope="module")
def tokenizers(smollm2_path: Path) -> dict[str, Tokenizer]:
    return {"smollm2": Tokenizer.from_gguf(smollm2_path),
            "mistral": Tokenizer.from_gguf(FIXTURES / "tokenizer" / "mistral-v1-vocab.gguf")}


def same_set(ours: np.ndarray, recorded: dict) -> str | None:
    """None if equal, else a short description of the difference."""
    digest = hashlib.sha256(np.sort(ours).astype("<u4").tobytes()).hexdigest()
    if len(ours) == recorded["count"] and digest == recorded["sha256"]:
        return None
    diff = f"{len(ours)} allowed, llama.cpp {recorded['count']}"
    if "ids" in recorded:
        theirs = set(recorded["ids"])
        diff += f"; only ours {sorted(set(ours.tolist()) - theirs)[:10]}, only llama.cpp {sorted(theirs - set(ours.tolist()))[:10]}"
    return diff


@pytest.mark.parametrize("case", DOC["masks"], ids=[c["name"] for c in DOC["masks"]])
def test_masks_match_llama_cpp(case: dict, tokenizers: dict[str, Tokenizer]) -> None:
    tok = tokenizers[case["vocab"]]
    c = GrammarConstraint(case["grammar"], tok)
    controls = [i for i in range(tok.n_vocab) if tok.attrs[i] & (ATTR_CONTROL | ATTR_UNKNOWN) and not tok.is_eog(i)]
    for k, step in enumerate(case["steps"]):
        ok = c.allowed()
        assert not ok[controls].any(), f"step {k}: a control token allowed"
        diff = same_set(np.flatnonzero(ok), step["allowed"])
        assert diff is None, f"{case['name']} step {k}: {diff}"
        if k < len(case["tokens"]):
            c.advance(case["tokens"][k])
    assert any(tok.is_eog(i) for i in np.flatnonzero(c.allowed())), "the whole text is accepted"


@pytest.mark.parametrize("case", DOC["parse"], ids=[repr(p["grammar"][:24]) for p in DOC["parse"]])
def test_parse_errors_match_llama_cpp(case: dict) -> None:
    text = case["grammar"]
    if case["llama_cpp_accepts"] and text not in STRICTER:
        parse_grammar(text)
        return
    with pytest.raises(GrammarError) as err:
        parse_grammar(text)
    message = str(err.value)
    assert message.startswith("line "), message
    assert "\n" not in message


@pytest.mark.parametrize("case", DOC["schemas"], ids=[s["name"] for s in DOC["schemas"]])
def test_schema_acceptance_against_llama_cpp_converter(case: dict) -> None:
    """Valid instances (by jsonschema) are accepted, invalid ones refused; llama.cpp's converter
    accepts every instance we accept (it is looser: integer bounds are not written by it)."""
    m = compile_grammar(json_schema_to_gbnf(case["schema"]))
    for text, llama_ok in case["llama_cpp_accepts"].items():
        checker = jsonschema.Draft202012Validator.FORMAT_CHECKER       # date and uuid among them
        valid = jsonschema.Draft202012Validator(case["schema"], format_checker=checker).is_valid(json.loads(text))
        assert valid == (text in case["valid"]), text
        ours = m.match(text.encode())
        assert ours == valid, text
        assert llama_ok or not ours, text

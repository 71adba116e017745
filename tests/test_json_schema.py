"""JSON Schema -> GBNF, with the `jsonschema` package as the oracle: random walks through the
grammar of many generated schemas give JSON that validates; hand-written instances are
accepted exactly when jsonschema says they are valid; unsupported features raise SchemaError
naming them. Formats are checked with Python's own parsers (datetime, uuid)."""
from __future__ import annotations

import datetime
import json
import uuid

import jsonschema
import numpy as np
import pytest

from runtime.grammar import JSON_OBJECT_GBNF, JSON_VALUE_GBNF, SchemaError, compile_grammar, json_schema_to_gbnf
from runtime.grammar.matcher import DEAD, Matcher

VALID = jsonschema.Draft202012Validator


def random_text(m: Matcher, rng: np.random.Generator, budget: int = 120) -> str:
    """A random string the grammar matches: random characters while within `budget`, then the
    characters that keep the stacks shortest (closing what is open) until it may end."""
    cid, out = m.start, []
    for n in range(budget * 4):
        if m.accepts(cid) and (m.finished(cid) or rng.random() < (0.05 if n < budget else 1.0)):
            return "".join(out)
        moves = [(k, m.step(cid, k)) for k in range(m.n_classes)]
        moves = [(k, c) for k, c in moves if c != DEAD and _chars(m, k)]
        assert moves, f"stuck after {''.join(out)!r}"
        if n >= budget:
            depth = [min(len(s) for s in m.configs[c]) for _, c in moves]
            moves = [mv for mv, d in zip(moves, depth) if d == min(depth)]
        k, cid = moves[rng.integers(len(moves))]
        lo, hi = _chars(m, k)
        out.append(chr(int(rng.integers(lo, hi + 1))))
    raise AssertionError(f"no end in sight: {''.join(out)!r}")


def _chars(m: Matcher, k: int) -> tuple[int, int] | None:
    """Class k's code points, kept to Unicode scalars other than NUL and surrogates."""
    lo = m.bounds[k - 1] if k else 0
    hi = (m.bounds[k] - 1) if k < len(m.bounds) else 0x10FFFF
    lo, hi = max(lo, 1), min(hi, 0x10FFFF)
    if 0xD800 <= lo <= 0xDFFF:
        lo = 0xE000
    if 0xD800 <= hi <= 0xDFFF:
        hi = 0xD7FF
    return (lo, hi) if lo <= hi else None


def random_schema(rng: np.random.Generator, depth: int = 0) -> dict:
    kinds = ["string", "integer", "number", "boolean", "null", "enum", "const", "str-len", "pattern",
             "format", "int-range", "num-range"]
    if depth < 2:
        kinds += ["object", "object", "array", "anyOf", "tuple"]
    kind = kinds[rng.integers(len(kinds))]
    if kind in ("string", "integer", "number", "boolean", "null"):
        return {"type": kind}
    if kind == "enum":
        return {"enum": ["a", 1, None, "é\"x", [1, 2], {"k": True}][: int(rng.integers(1, 7))]}
    if kind == "const":
        return {"const": {"a": [1, "two", None]}}
    if kind == "str-len":
        lo = int(rng.integers(0, 4))
        return {"type": "string", "minLength": lo, "maxLength": lo + int(rng.integers(0, 5))}
    if kind == "pattern":
        pats = [r"^[a-z]+-\d{2,3}$", r"^(ab|cd)*x?$", r"\d", r"^[^\s]{2}\.[A-F]$", r"^a.b$", r'^"\w+"$']
        return {"type": "string", "pattern": pats[rng.integers(len(pats))]}
    if kind == "format":
        return {"type": "string", "format": ["date", "time", "date-time", "uuid"][rng.integers(4)]}
    if kind == "int-range":
        lo = int(rng.integers(-300, 300))
        return {"type": "integer", "minimum": lo, "maximum": lo + int(rng.integers(0, 2000))}
    if kind == "num-range":
        return {"type": "number", "minimum": int(rng.integers(0, 20)), "exclusiveMaximum": int(rng.integers(20, 99))}
    if kind == "object":
        names = ["id", "name", "x y", "ünï", "a\"q"][: int(rng.integers(1, 6))]
        props = {n: random_schema(rng, depth + 1) for n in names}
        req = [n for n in names if rng.random() < 0.5]
        extra = [False, True, {"type": "integer"}][rng.integers(3)]
        return {"type": "object", "properties": props, "required": req, "additionalProperties": extra}
    if kind == "array":
        lo = int(rng.integers(0, 3))
        return {"type": "array", "items": random_schema(rng, depth + 1), "minItems": lo,
                "maxItems": lo + int(rng.integers(0, 4))}
    if kind == "tuple":
        return {"type": "array", "prefixItems": [random_schema(rng, depth + 1) for _ in range(2)],
                "items": rng.random() < 0.5 and {"type": "boolean"}, "minItems": int(rng.integers(0, 3))}
    return {"anyOf": [random_schema(rng, depth + 1), {"type": "null"}]}


def check_formats(schema: dict, value) -> None:
    """jsonschema leaves most formats unchecked: Python's parsers check them here."""
    if isinstance(schema, dict) and "format" in schema and isinstance(value, str):
        parse = {"date": datetime.date.fromisoformat, "time": datetime.time.fromisoformat,
                 "date-time": datetime.datetime.fromisoformat, "uuid": uuid.UUID}[schema["format"]]
        parse(value)


@pytest.mark.parametrize("seed", range(40))
def test_random_walks_validate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    schema = random_schema(rng)
    m = compile_grammar(json_schema_to_gbnf(schema))
    for _ in range(4):
        text = random_text(m, rng)
        value = json.loads(text)
        VALID(schema).validate(value)
        check_formats(schema, value)


@pytest.mark.parametrize("fmt", ["date", "time", "date-time", "uuid"])
def test_formats_parse(fmt: str) -> None:
    m = compile_grammar(json_schema_to_gbnf({"type": "string", "format": fmt}))
    rng = np.random.default_rng(1)
    for _ in range(30):
        check_formats({"format": fmt}, json.loads(random_text(m, rng)))


CASES = [
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["b"],
      "additionalProperties": False},
     ['{"b": ""}', '{"a": -3, "b": "x"}', '{ "a":1,"b":"\\u00e9\\n" }'],
     ['{}', '{"a": 1}', '{"b": "x", "a": 1}', '{"b": 1}', '{"b": "x", "c": 1}', '{"a": 01, "b": ""}']),
    ({"type": "object", "properties": {"a": {"type": "boolean"}}, "additionalProperties": {"type": "number"}},
     ['{}', '{"a": true}', '{"a": false, "z": 1.5}', '{"zz": 2, "ab": 3}'],
     ['{"a": 1}', '{"z": "s"}']),
    ({"type": "array", "items": {"enum": ["x", 2]}, "minItems": 1, "maxItems": 2},
     ['["x"]', '[2, "x"]'], ['[]', '["y"]', '[2, 2, 2]']),
    ({"type": "array", "prefixItems": [{"const": 1}, {"type": "null"}], "items": {"type": "string"}},
     ['[]', '[1]', '[1, null, "a", "b"]'], ['[2]', '[1, null, 3]']),
    ({"type": "integer", "minimum": -15, "exclusiveMaximum": 120},
     ['-15', '0', '7', '119'], ['-16', '120', '1.5', '-0']),
    ({"type": "integer", "exclusiveMinimum": 99}, ['100', '123456'], ['99', '0', '-100']),
    ({"type": "number", "minimum": 1, "maximum": 3}, ['1', '2.75', '3', '3.000'], ['0.99', '3.01', '-2']),
    ({"type": "string", "minLength": 2, "maxLength": 3}, ['"ab"', '"a\\nb"', '"日本語"'], ['"a"', '"abcd"']),
    ({"type": "string", "pattern": "^[A-Z]{2}-\\d+$"}, ['"AB-1"', '"XY-0042"'], ['"ab-1"', '"AB-"', '"AB-1x"']),
    ({"type": "string", "pattern": "o+"}, ['"foo"', '"o"', '"xoy"'], ['"abc"', '""']),
    # \S: what neither ECMA-262 nor Python's re calls white space (no-break space and U+3000 are
    # white space to both, U+0085 to Python's: the grammar made strings the validator refused)
    ({"type": "string", "pattern": "^\\S+$"}, ['"ab"', '"\u00e9\u65e5"'], ['"a\u00a0b"', '"\u3000"', '"a\u0085"']),
    ({"type": "string", "pattern": "^a\\sb$"}, ['"a b"', '"a\\tb"', '"a\u00a0b"', '"a\u3000b"'], ['"ab"', '"a\ufeffb"']),
    ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, ['"s"', '4'], ['4.5', 'null']),
    ({"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}]},
     ['{"a": 1, "b": true}'], ['{"a": 1}', '{"b": true}']),
    ({"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                          "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
                         "required": ["v", "next"], "additionalProperties": False}},
      "$ref": "#/$defs/node"},
     ['{"v": 1, "next": null}', '{"v": 1, "next": {"v": 2, "next": null}}'], ['{"v": 1, "next": {"v": 2}}']),
    ({"type": ["string", "null"]}, ['"x"', 'null'], ['1']),
    ({"type": "string", "format": "date-time"}, ['"2024-02-29T23:59:59Z"', '"2024-01-01T00:00:00.5+05:30"'],
     ['"2024-13-01T00:00:00Z"', '"2024-01-01 00:00:00Z"']),
    ({}, ['1', '"x"', '{"a": [null, true]}'], ['tru', '{a: 1}']),
]


@pytest.mark.parametrize("schema, valid, invalid", CASES, ids=[str(i) for i in range(len(CASES))])
def test_hand_written_instances(schema: dict, valid: list[str], invalid: list[str]) -> None:
    m = compile_grammar(json_schema_to_gbnf(schema))
    for text in valid:
        assert VALID(schema, format_checker=VALID.FORMAT_CHECKER).is_valid(json.loads(text)), text
        assert m.match(text.encode()), text
    for text in invalid:
        assert not m.match(text.encode()), text


def test_any_json_and_object_grammars() -> None:
    value, obj = compile_grammar(JSON_VALUE_GBNF), compile_grammar(JSON_OBJECT_GBNF)
    for text in ['{"a": [1, -2.5e+3, "x\\"y", true, false, null, {}], "b": {"c": []}}', '[]', '"s"', '0']:
        json.loads(text)
        assert value.match(text.encode()), text
        assert obj.match(text.encode()) == text.startswith("{"), text
    for text in ['{"a": 1,}', '[1 2]', '"\\x"', '01', '{"a" 1}', '{"a": 1} ']:
        assert not value.match(text.encode()), text
    rng = np.random.default_rng(5)
    for _ in range(20):
        assert isinstance(json.loads(random_text(obj, rng)), dict)


@pytest.mark.parametrize("lo, hi", [(0, 0), (0, 9), (5, 123), (-120, -7), (-9, 31), (99, 1001), (7, None), (None, -3)])
def test_integer_ranges_exactly(lo, hi) -> None:
    schema = {"type": "integer"}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    m = compile_grammar(json_schema_to_gbnf(schema))
    for x in range(-1200, 1200):
        assert m.match(str(x).encode()) == VALID(schema).is_valid(x), x


@pytest.mark.parametrize("schema, named", [
    ({"type": "string", "format": "email"}, "format 'email'"),
    ({"type": "object", "patternProperties": {}}, "'patternProperties'"),
    ({"type": "array", "uniqueItems": True}, "'uniqueItems'"),
    ({"type": "number", "multipleOf": 3}, "'multipleOf'"),
    ({"not": {"type": "string"}}, "'not'"),
    ({"$ref": "https://example.com/s.json"}, "only references inside the schema"),
    ({"type": "string", "pattern": "(?=a)b"}, "(?...)"),
    ({"type": "string", "pattern": "^(a)\\1$"}, "escape '\\1'"),
    ({"type": "number", "minimum": -1.5}, "number bounds"),
    ({"type": "object", "properties": {"a": {"type": "strin"}}}, "#/properties/a: unknown type 'strin'"),
    ({"if": {}, "then": {}}, "'if'"),
    (False, "schema false"),
    ({"allOf": [{"properties": {"a": {}}}], "additionalProperties": False}, "additionalProperties beside allOf"),
])
def test_unsupported_features_are_named(schema, named: str) -> None:
    with pytest.raises(SchemaError) as err:
        json_schema_to_gbnf(schema)
    assert named in str(err.value), str(err.value)


FINITE = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 6}, "n": {"type": "integer", "minimum": -20, "maximum": 300},
    "kind": {"enum": ["a", "b", None]}, "ok": {"type": "boolean"},
    "when": {"type": "string", "format": "date"},
    "xs": {"type": "array", "items": {"type": "string", "pattern": "^[a-c]{1,3}$"}, "maxItems": 2}},
    "required": ["name", "n"], "additionalProperties": False}


def test_token_walks_on_smollm2_validate(smollm2_path) -> None:
    """Random allowed tokens of the real SmolLM2 vocabulary until end of generation: the text
    validates (the masks, not only the matcher, keep to the schema)."""
    from runtime.grammar import GrammarConstraint
    from runtime.tokenizer import Tokenizer
    tok = Tokenizer.from_gguf(smollm2_path)
    rng = np.random.default_rng(3)
    gbnf = json_schema_to_gbnf(FINITE)
    for _ in range(8):
        c, out = GrammarConstraint(gbnf, tok), b""
        while not c.done:
            ids = np.flatnonzero(c.allowed())
            t = int(rng.choice(ids))
            c.advance(t)
            if tok.is_eog(t):
                break
            out += tok.token_to_piece(t)
        value = json.loads(out)
        VALID(FINITE).validate(value)
        check_formats(FINITE["properties"]["when"], value.get("when"))

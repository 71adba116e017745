"""JSON Schema -> GBNF: a grammar whose every output is JSON valid under the schema.

Supported: `type` (one or a list), objects (`properties` in their order, `required`,
`additionalProperties` false / true / a schema; absent means no other properties), arrays
(`items`, `prefixItems`, `minItems`, `maxItems`), `enum`, `const`, `anyOf`, `oneOf` (as anyOf:
its branches should not overlap), `allOf` (of object schemas, merged), `$ref` to the schema's
own `#/...` (recursion included), strings (`minLength`, `maxLength`, `pattern` (regex.py),
`format` date / time / date-time / uuid), integers (`minimum`, `maximum`, exclusive ones: any
range), numbers (integer-valued bounds with a lower bound >= 0), booleans, null, `{}`/`true`
(any JSON value). Annotations (title, description, default, examples, ...) are ignored.
Anything else raises SchemaError naming the keyword and where it is: never silently dropped.

Whitespace: at most one newline plus 20 spaces or tabs between tokens, no whitespace before
the first or after the last character (so the output ends exactly where the value does).
"""
from __future__ import annotations

import json
import math
from typing import Any

from .regex import PatternError, gbnf_literal, pattern_gbnf

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment",
               "deprecated", "readOnly", "writeOnly", "discriminator", "$defs", "definitions",
               "contentMediaType", "contentEncoding"}
OBJECT_KEYS = {"properties", "required", "additionalProperties"}
ARRAY_KEYS = {"items", "prefixItems", "minItems", "maxItems", "uniqueItems"}
STRING_KEYS = {"minLength", "maxLength", "pattern", "format"}
NUMBER_KEYS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
COMBINERS = {"anyOf", "oneOf", "allOf", "$ref", "enum", "const", "type"}
KNOWN = ANNOTATIONS | OBJECT_KEYS | ARRAY_KEYS | STRING_KEYS | NUMBER_KEYS | COMBINERS
TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
MAX_COUNT = 2000    # the largest length bound a grammar repetition takes

PRIMITIVES = {
    "ws": r'| " " | "\n" [ \t]{0,20}',
    # (no \uD800-\uDFFF: a pair would be one character written as two, past minLength/maxLength)
    "json-char": r'[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} ) )',
    "json-string": r'"\"" json-char* "\""',
    "json-int": r'"-"? ( "0" | [1-9] [0-9]{0,15} )',
    "json-number": r'json-int ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?',
    "json-boolean": r'"true" | "false"',
    "json-null": r'"null"',
    "json-value": r'json-object | json-array | json-string | json-number | json-boolean | json-null',
    "json-object": r'"{" ws ( json-member ( "," ws json-member )* )? "}"',
    "json-member": r'json-string ws ":" ws json-value ws',
    "json-array": r'"[" ws ( json-value ws ( "," ws json-value ws )* )? "]"',
    # dates that exist: day counts per month, 29 February in leap years only, years 0001-9999
    "date": r'year "-" ( mon31 "-" day31 | mon30 "-" day30 | "02-" day28 ) | leap-year "-02-29"',
    "year": r'[1-9] [0-9]{3} | "0" [1-9] [0-9]{2} | "00" [1-9] [0-9] | "000" [1-9]',
    "leap-year": r'[0-9] [0-9] ( "0" [48] | [2468] [048] | [13579] [26] ) | ( "0" [48] | [2468] [048] | [13579] [26] ) "00"',
    "mon31": r'"0" [13578] | "1" [02]',
    "mon30": r'"0" [469] | "11"',
    "day28": r'"0" [1-9] | "1" [0-9] | "2" [0-8]',
    "day30": r'day28 | "29" | "30"',
    "day31": r'day30 | "31"',
    "time": r'( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? '
            r'( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
    "date-time": r'date "T" time',
    "uuid": r'[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}',
}
_DEPENDS = {"json-string": ["json-char"], "json-number": ["json-int"], "json-member": ["json-string", "ws", "json-value"],
            "json-value": ["json-object", "json-array", "json-string", "json-number", "json-boolean", "json-null"],
            "json-object": ["ws", "json-member"], "json-array": ["ws", "json-value"],
            "date-time": ["date", "time"], "date": ["year", "leap-year", "mon31", "mon30", "day28", "day30", "day31"],
            "day30": ["day28"], "day31": ["day30", "day28"]}


class SchemaError(ValueError):
    """A schema this converter cannot write as a grammar: the message names the feature."""


def _primitive_rules(used: set[str]) -> dict[str, str]:
    todo, out = list(used), {}
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out[name] = PRIMITIVES[name]
        todo.extend(_DEPENDS.get(name, []))
    return out


def json_literal(value: Any) -> str:
    """A JSON value written compactly, as a GBNF literal."""
    return gbnf_literal(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _digits(n: int) -> list[int]:
    return [int(c) for c in str(n)]


def _same_length(lo: str, hi: str) -> str:
    """GBNF for the numbers lo..hi written with the same number of digits."""
    if lo == hi:
        return f'"{lo}"'
    if len(lo) == 1:
        return f"[{lo}-{hi}]"
    if lo[0] == hi[0]:
        return f'"{lo[0]}" ({_same_length(lo[1:], hi[1:])})'
    rest = len(lo) - 1
    if lo[1:] == "0" * rest and hi[1:] == "9" * rest:
        return f"[{lo[0]}-{hi[0]}] [0-9]{{{rest}}}"
    parts = [f'"{lo[0]}" ({_same_length(lo[1:], "9" * rest)})']
    if int(hi[0]) - int(lo[0]) > 1:
        parts.append(f"[{int(lo[0]) + 1}-{int(hi[0]) - 1}] [0-9]{{{rest}}}")
    parts.append(f'"{hi[0]}" ({_same_length("0" * rest, hi[1:])})')
    return " | ".join(parts)


def natural_range(lo: int, hi: int | None) -> str:
    """GBNF for the integers lo..hi (0 <= lo; hi None: no upper bound), no leading zeros."""
    parts, length = [], len(str(lo))
    start = lo
    while hi is None or start <= hi:
        top = 10 ** length - 1
        end = top if hi is None else min(top, hi)
        if length > 1 and start < 10 ** (length - 1):
            start = 10 ** (length - 1)
        parts.append(_same_length(str(start), str(end)))
        if hi is None and length >= 2 and start == 10 ** (length - 1):
            parts[-1] = f"[1-9] [0-9]{{{length - 1},15}}"     # all lengths from here on
            break
        start, length = end + 1, length + 1
    return " | ".join(f"( {p} )" for p in parts)


def integer_range(lo: int | None, hi: int | None) -> str:
    """GBNF for the integers lo..hi (None: unbounded on that side)."""
    if lo is not None and hi is not None and lo > hi:
        raise SchemaError(f"integer range {lo}..{hi} is empty")
    parts = []
    if lo is None or lo < 0:                     # negatives: "-" and |x| in max(1,-hi)..-lo
        mag_lo = 1 if hi is None or hi >= 0 else -hi
        parts.append(f'"-" ( {natural_range(mag_lo, None if lo is None else -lo)} )')
    if hi is None or hi >= 0:
        parts.append(natural_range(max(lo or 0, 0), hi))
    return " | ".join(f"( {p} )" for p in parts)


_JSON_TYPES = {"string": (str,), "number": (int, float), "boolean": (bool,), "null": (type(None),),
               "array": (list,), "object": (dict,)}


def _is_type(value: Any, t: Any) -> bool:
    """Whether a JSON value has the JSON Schema type t (true and false are no numbers)."""
    if isinstance(value, bool) and t != "boolean":
        return False
    if t == "integer":
        return isinstance(value, int) or isinstance(value, float) and value.is_integer()
    return isinstance(value, _JSON_TYPES.get(t, ()))


class _Converter:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.rules: dict[str, str] = {}
        self.used: set[str] = set()
        self.refs: dict[str, str] = {}

    # --- rule bookkeeping ------------------------------------------------------------------

    def prim(self, name: str) -> str:
        self.used.add(name)
        return name

    def rule(self, hint: str, body: str) -> str:
        """A named rule for body (the same body gets the same rule)."""
        for name, b in self.rules.items():
            if b == body:
                return name
        base = "".join(c if c.isascii() and c.isalnum() else "-" for c in hint).strip("-") or "r"
        name, n = base, 1
        while name in self.rules or name in PRIMITIVES or name == "root":
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = body
        return name

    def fail(self, path: str, what: str) -> SchemaError:
        return SchemaError(f"{path}: {what}")

    # --- schemas ---------------------------------------------------------------------------

    def visit(self, schema: Any, path: str, hint: str) -> str:
        """A GBNF expression for the JSON values `schema` accepts."""
        if schema is True:
            return self.prim("json-value")
        if schema is False:
            raise self.fail(path, "schema false accepts nothing")
        if not isinstance(schema, dict):
            raise self.fail(path, f"a schema must be an object or a boolean, not {type(schema).__name__}")
        for key in schema:
            if key not in KNOWN:
                raise self.fail(path, f"unsupported JSON Schema keyword '{key}'")
        if "$ref" in schema:
            return self.ref(schema, path)
        if "allOf" in schema:
            return self.visit(self.merge_all_of(schema, path), path, hint)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.alternatives(schema, key, path, hint)
        if "const" in schema:
            return json_literal(schema["const"])
        if "enum" in schema:
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                raise self.fail(path, "enum must be a non-empty array")
            values = schema["enum"]
            if "type" in schema:  # a type beside enum: only the values of that type
                types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
                values = [v for v in values if any(_is_type(v, t) for t in types)]
                if not values:
                    raise self.fail(path, "no value of enum has the type beside it")
            return "( " + " | ".join(json_literal(v) for v in values) + " )"
        if "type" not in schema and not set(schema) & (OBJECT_KEYS | ARRAY_KEYS | STRING_KEYS | NUMBER_KEYS):
            return self.prim("json-value")
        types = schema.get("type", self.implied_types(schema))
        if isinstance(types, str):
            types = [types]
        if not isinstance(types, list) or not types:
            raise self.fail(path, "type must be a string or a non-empty array of strings")
        exprs = []
        for t in types:
            if t not in TYPES:
                raise self.fail(path, f"unknown type {t!r}")
            exprs.append(getattr(self, "visit_" + t)(schema, path, hint))
        return exprs[0] if len(exprs) == 1 else "( " + " | ".join(exprs) + " )"

    def implied_types(self, schema: dict) -> list[str]:
        keys = set(schema)
        found = [t for t, ks in (("object", OBJECT_KEYS), ("array", ARRAY_KEYS), ("string", STRING_KEYS),
                                 ("number", NUMBER_KEYS)) if keys & ks]
        return found or list(TYPES)

    def alternatives(self, schema: dict, key: str, path: str, hint: str) -> str:
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise self.fail(path, f"{key} must be a non-empty array")
        others = set(schema) - ANNOTATIONS - {key}
        if others:
            raise self.fail(path, f"{key} beside {sorted(others)[0]!r} is not supported")
        exprs = [self.visit(b, f"{path}/{key}/{i}", f"{hint}-{i}") for i, b in enumerate(branches)]
        return "( " + " | ".join(exprs) + " )"

    def resolve(self, ref: str, path: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise self.fail(path, f"$ref {ref!r}: only references inside the schema (#/...) are supported")
        node = self.root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise self.fail(path, f"$ref {ref!r} points to nothing")
        return node

    def ref(self, schema: dict, path: str) -> str:
        others = set(schema) - ANNOTATIONS - {"$ref"}
        if others:
            raise self.fail(path, f"$ref beside {sorted(others)[0]!r} is not supported")
        ref = schema["$ref"]
        if ref not in self.refs:
            target = self.resolve(ref, path)
            name = self.rule(ref.rsplit("/", 1)[-1] or "root-ref", f"<pending {ref}>")
            self.refs[ref] = name
            self.rules[name] = self.visit(target, ref, name)
        return self.refs[ref]

    def merge_all_of(self, schema: dict, path: str) -> dict:
        """allOf of object schemas (after $ref) as one object schema."""
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for i, sub in enumerate(schema["allOf"]):
            while isinstance(sub, dict) and set(sub) - ANNOTATIONS == {"$ref"}:
                sub = self.resolve(sub["$ref"], f"{path}/allOf/{i}")
            if sub is True or sub == {}:
                continue
            if not isinstance(sub, dict) or set(sub) - ANNOTATIONS - OBJECT_KEYS - {"type"} \
                    or sub.get("type", "object") != "object":
                raise self.fail(f"{path}/allOf/{i}", "allOf is supported for object schemas only")
            props = dict(merged.get("properties", {}))
            for name, prop in sub.get("properties", {}).items():
                if name in props and props[name] != prop:
                    raise self.fail(f"{path}/allOf/{i}", f"allOf: property '{name}' defined twice")
                props[name] = prop
            merged["properties"] = props
            merged["required"] = list(dict.fromkeys(merged.get("required", []) + sub.get("required", [])))
            merged["type"] = "object"
        # additionalProperties of a part (or of the outer schema) also forbids the properties
        # its siblings define: unsatisfiable, or a meaning this merge would not keep
        closed = [(f"{path}/allOf/{i}", sub) for i, sub in enumerate(schema["allOf"]) if isinstance(sub, dict)]
        for where, part in closed + [(path, schema)]:
            extra = part.get("additionalProperties", True)
            if extra is not True and set(merged.get("properties", {})) - set(part.get("properties", {})):
                raise self.fail(where, "additionalProperties beside allOf parts that define other "
                                       "properties is not supported")
            if extra is not True:
                merged["additionalProperties"] = extra
        return merged

    # --- types -----------------------------------------------------------------------------

    def visit_null(self, schema: dict, path: str, hint: str) -> str:
        return self.prim("json-null")

    def visit_boolean(self, schema: dict, path: str, hint: str) -> str:
        return self.prim("json-boolean")

    def visit_string(self, schema: dict, path: str, hint: str) -> str:
        fmt, pattern = schema.get("format"), schema.get("pattern")
        lo, hi = self.count(schema, "minLength", path), self.count(schema, "maxLength", path)
        limited = lo is not None or hi is not None
        if sum((fmt is not None, pattern is not None, limited)) > 1:
            raise self.fail(path, "format, pattern and minLength/maxLength together are not supported")
        if fmt is not None:
            if fmt not in ("date", "time", "date-time", "uuid"):
                raise self.fail(path, f"unsupported string format {fmt!r}")
            return self.rule(f"{fmt}-string", f'"\\"" {self.prim(fmt)} "\\""')
        char = self.prim("json-char")
        if pattern is not None:
            try:
                body = pattern_gbnf(pattern, char)
            except PatternError as e:
                raise self.fail(path, f"pattern {pattern!r}: {e}") from None
            return self.rule(f"{hint}-pattern", f'"\\"" {body} "\\""')
        if not limited:
            return self.prim("json-string")
        lo = lo or 0
        if hi is not None and hi < lo:
            raise self.fail(path, "maxLength is below minLength")
        return self.rule(f"{hint}-string", f'"\\"" {char}{{{lo},{"" if hi is None else hi}}} "\\""')

    def count(self, schema: dict, key: str, path: str) -> int | None:
        v = schema.get(key)
        if v is None:
            return None
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise self.fail(path, f"{key} must be a non-negative integer")
        if v > MAX_COUNT:
            raise self.fail(path, f"{key} {v} is above {MAX_COUNT}, the largest supported")
        return v

    def bounds(self, schema: dict, path: str) -> tuple[Any, bool, Any, bool]:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        lo_x, hi_x = False, False
        for key, excl in (("exclusiveMinimum", True), ("exclusiveMaximum", False)):
            v = schema.get(key)
            if isinstance(v, bool):
                raise self.fail(path, f"{key} as a boolean (draft 4) is not supported")
            if v is not None:
                if excl:
                    lo, lo_x = (v, True) if lo is None or v >= lo else (lo, False)
                else:
                    hi, hi_x = (v, True) if hi is None or v <= hi else (hi, False)
        for v in (lo, hi):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise self.fail(path, "minimum/maximum must be numbers")
            if isinstance(v, float) and not math.isfinite(v):  # (Python's json reads NaN and Infinity)
                raise self.fail(path, f"minimum/maximum must be finite, not {v}")
            if v is not None and abs(v) >= 10 ** 15:
                raise self.fail(path, f"the bound {v} is beyond the 15 digits supported")
        return lo, lo_x, hi, hi_x

    def visit_integer(self, schema: dict, path: str, hint: str) -> str:
        lo, lo_x, hi, hi_x = self.bounds(schema, path)
        if lo is None and hi is None:
            return self.prim("json-int")
        ilo = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
        ihi = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
        if ilo is not None and ihi is not None and ilo > ihi:
            raise self.fail(path, f"no integer lies between the bounds {lo} and {hi}")
        return self.rule(f"{hint}-int", integer_range(ilo, ihi))

    def visit_number(self, schema: dict, path: str, hint: str) -> str:
        lo, lo_x, hi, hi_x = self.bounds(schema, path)
        if lo is None and hi is None:
            return self.prim("json-number")
        if lo is None or lo < 0 or any(v is not None and float(v) != int(v) for v in (lo, hi)):
            raise self.fail(path, "number bounds other than whole numbers with a lower bound >= 0 "
                                  "are not supported (integers take any bounds)")
        lo, hi = int(lo), None if hi is None else int(hi)
        frac, nonzero = '( "." [0-9]+ )?', '"." [0-9]* [1-9]'
        parts = []
        first = lo + 1 if lo_x else lo
        top = None if hi is None else hi - 1                 # whole part below hi: any fraction
        if top is None or first <= top:
            parts.append(f"( {natural_range(first, top)} ) {frac}")
        if lo_x and (hi is None or lo < hi):
            parts.append(f'"{lo}" {nonzero}')                  # lo itself plus a fraction
        if hi is not None and not hi_x and hi >= first:
            parts.append(f'"{hi}" ( "." "0"+ )?')
        if not parts:
            raise self.fail(path, f"no number lies between the bounds {lo} and {hi}")
        return self.rule(f"{hint}-number", " | ".join(f"( {p} )" for p in parts))

    def visit_array(self, schema: dict, path: str, hint: str) -> str:
        if schema.get("uniqueItems"):
            raise self.fail(path, "unsupported JSON Schema keyword 'uniqueItems'")
        prefix = schema.get("prefixItems", [])
        if not isinstance(prefix, list):
            raise self.fail(path, "prefixItems must be an array")
        lo = self.count(schema, "minItems", path) or 0
        hi = self.count(schema, "maxItems", path)
        items = schema.get("items", True)
        if isinstance(items, list):
            raise self.fail(path, "items as an array (draft 4 tuples) is not supported: use prefixItems")
        if items is False:
            hi = len(prefix) if hi is None else min(hi, len(prefix))
        if hi is not None and hi < lo:
            raise self.fail(path, "maxItems is below minItems (or items false leaves too few)")
        ws = self.prim("ws")
        elems = [f"{self.visit(p, f'{path}/prefixItems/{i}', f'{hint}-{i}')} {ws}" for i, p in enumerate(prefix)]
        item = None if hi is not None and hi <= len(prefix) else \
            f"{self.visit(items, f'{path}/items', f'{hint}-item')} {ws}"
        return self.rule(f"{hint}-array", f'"[" {ws} {self.array_body(elems, item, lo, hi)} "]"')

    def array_body(self, elems: list[str], item: str | None, lo: int, hi: int | None) -> str:
        """Elements elems[0], elems[1], ... then `item` repeated: lo..hi elements in all."""
        k = len(elems)
        if item is None:
            body = ""
        elif k == 0:
            rest = f'( "," ws {item} ){{{max(lo - 1, 0)},{"" if hi is None else hi - 1}}}'
            body = f"{item} {rest}" if lo else f"( {item} {rest} )?"
        else:
            body = f'( "," ws {item} ){{{max(lo - k, 0)},{"" if hi is None else hi - k}}}'
        for j in reversed(range(k)):        # element j may be missing when j elements suffice
            seq = (('"," ws ' if j else "") + f"{elems[j]} {body}").strip()
            body = seq if j < lo else f"( {seq} )?"
        return body

    def visit_object(self, schema: dict, path: str, hint: str) -> str:
        props = schema.get("properties", {})
        if not isinstance(props, dict):
            raise self.fail(path, "properties must be an object")
        required = schema.get("required", [])
        if not isinstance(required, list):
            raise self.fail(path, "required must be an array")
        for name in required:
            if name not in props:
                raise self.fail(path, f"required property {name!r} is not in properties")
        ws = self.prim("ws")
        members = []
        for name, sub in props.items():
            value = self.visit(sub, f"{path}/properties/{name}", f"{hint}-{name}")
            members.append((f'{json_literal(name)} {ws} ":" {ws} {value} {ws}', name in required))
        extra = self.additional(schema, path, hint, list(props))
        # tail_i: members i.. each after a comma (optional ones may be left out), then the
        # extras; head_i: the same without the first comma. Both are rules: linear size.
        tail = self.rule(f"{hint}-extras", f'( "," {ws} {extra} )*') if extra else ""
        head = self.rule(f"{hint}-extras-first", f"( {extra} {tail} )?") if extra else ""
        for member, req in reversed(members):
            comma = f'"," {ws} {member} {tail}'.strip()
            first = f"{member} {tail}".strip()
            tail = self.rule(f"{hint}-rest", comma if req else f"{comma} | {tail}" if tail else f"( {comma} )?")
            head = self.rule(f"{hint}-first", first if req else f"{first} | {head}" if head else f"( {first} )?")
        return self.rule(f"{hint}-object", f'"{{" {ws} {head} "}}"'.replace("  ", " "))

    def additional(self, schema: dict, path: str, hint: str, names: list[str]) -> str:
        # absent: any members for an object without properties, none beside properties (even an
        # empty list of them: a tool without parameters takes {} only, as llama.cpp's grammar)
        extra = schema.get("additionalProperties", "properties" not in schema)
        if extra is False:
            return ""
        value = self.visit(extra, f"{path}/additionalProperties", f"{hint}-extra")
        key = self.key_not_in(names, hint) if names else self.prim("json-string")
        ws = self.prim("ws")
        return self.rule(f"{hint}-extra", f'{key} {ws} ":" {ws} {value} {ws}')

    def key_not_in(self, names: list[str], hint: str) -> str:
        """A JSON string that is none of `names` (a trie over their characters)."""
        char = self.prim("json-char")
        free = self.rule("free-chars", f'{char}* "\\""')
        trie: dict = {}
        for name in names:
            node = trie
            for ch in name:
                node = node.setdefault(ch, {})
            node[""] = {}

        def node_rule(node: dict, prefix: str) -> str:
            chars = [c for c in node if c]
            alts = [] if "" in node else ['"\\""']
            for c in chars:
                alts.append(f"{gbnf_literal(c)} {node_rule(node[c], prefix + c)}")
            exclude = "".join(f"\\x{ord(c):02X}" if ord(c) < 0x100 else f"\\u{ord(c):04X}" if ord(c) < 0x10000
                              else f"\\U{ord(c):08X}" for c in chars)
            alts.append(f'[^"\\\\\\x7F\\x00-\\x1F{exclude}] {free}')
            # an escape only where JSON needs one (\u for control characters): "\u0061" or "\/"
            # would spell a declared name's characters and give its key a second value
            alts.append(f'"\\\\" ( ["\\\\bfnrt] | "u00" [01] [0-9a-fA-F] ) {free}')
            return self.rule(f"{hint}-key", " | ".join(alts))

        return self.rule(f"{hint}-other-key", f'"\\"" {node_rule(trie, "")}')


def json_schema_to_gbnf(schema: Any) -> str:
    """The GBNF (root rule `root`) of the JSON texts valid under `schema` (a dict, a boolean, or
    JSON text). SchemaError if the schema uses something this converter does not support."""
    if isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except ValueError as e:
            raise SchemaError(f"the schema is not valid JSON: {e}") from None
    conv = _Converter(schema)
    root = conv.visit(schema, "#", "root")
    lines = [f"root ::= {root}"]
    lines += [f"{name} ::= {body}" for name, body in conv.rules.items()]
    lines += [f"{name} ::= {body}" for name, body in sorted(_primitive_rules(conv.used).items())]
    return "\n".join(lines) + "\n"


JSON_VALUE_GBNF = json_schema_to_gbnf(True)
JSON_OBJECT_GBNF = json_schema_to_gbnf({"type": "object", "additionalProperties": True})

"""Structured output: GBNF grammars (llama.cpp's format) and JSON Schema, as constraints on
generation (runtime/constraint.py).

    from runtime.grammar import GrammarConstraint, json_schema_to_gbnf
    GrammarConstraint(json_schema_to_gbnf(schema), tokenizer)

gbnf.py parses the grammar text; matcher.py matches code points against it (stacks of rule
positions, interned into configs with a memoized transition table); vocab.py walks a trie of
the vocabulary against a state to get the allowed-token mask; json_schema.py (with regex.py
for `pattern`) writes a schema as GBNF. Imports numpy: not for the launcher's start-up path.
"""
from .constraint import GrammarConstraint, compile_grammar
from .gbnf import Grammar, GrammarError, parse_grammar
from .json_schema import JSON_OBJECT_GBNF, JSON_VALUE_GBNF, SchemaError, json_schema_to_gbnf

__all__ = ["GrammarConstraint", "compile_grammar", "Grammar", "GrammarError", "parse_grammar",
           "JSON_OBJECT_GBNF", "JSON_VALUE_GBNF", "SchemaError", "json_schema_to_gbnf"]

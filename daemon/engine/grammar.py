"""Constrained generation: JSON Schema -> GBNF grammar -> llama.cpp's grammar sampler, per sequence.

``schema_grammar`` checks a client's JSON Schema against what the converter
(llama.cpp's, as ported by llama-cpp-python) supports, refusing anything else
with a 400 that names the keyword, and turns it into GBNF; results are cached
by the schema's hash. ``GrammarLibrary`` keeps one parsed grammar sampler per
grammar and model, and hands each sequence a clone (its own parse state).

``GrammarConstraint`` applies a grammar the way llama-server does: the token
the normal sampler picks is checked alone first (one candidate, cheap), and
only if the grammar rejects it is the whole vocabulary masked and the token
drawn again. Most tokens of a schema-guided answer pass the first check.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import threading
from collections import OrderedDict

import numpy as np

from localllm.errors import InvalidRequest

MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_GRAMMAR_BYTES = 512 * 1024
GRAMMARS_KEPT = 64

# Keywords that change nothing (annotations) or only say where a schema lives: accepted anywhere.
ANNOTATIONS = frozenset({"title", "description", "examples", "default", "$comment", "readOnly", "writeOnly",
                         "deprecated", "strict", "nullable", "$schema", "$id", "$defs", "definitions"})
FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
# The keywords the converter enforces, for each form of schema it recognises. It takes the first form
# that fits (in this order) and ignores every other keyword, so a schema may only use the keywords of its
# form: anything else would be silently left out of the grammar, and the answer could break the schema.
FORMS: tuple[tuple[str, frozenset[str]], ...] = (
    ("a $ref", frozenset({"$ref"})),
    ("anyOf/oneOf", frozenset({"anyOf", "oneOf"})),
    ("a list of types", frozenset({"type"})),
    ("const", frozenset({"const", "type"})),
    ("enum", frozenset({"enum", "type"})),
    ("an object with properties", frozenset({"type", "properties", "required", "additionalProperties"})),
    ("allOf", frozenset({"type", "allOf"})),
    ("an array", frozenset({"type", "items", "prefixItems", "minItems", "maxItems"})),
    ("a string pattern", frozenset({"type", "pattern"})),
    ("a string format", frozenset({"type", "format"})),
    ("a string length", frozenset({"type", "minLength", "maxLength"})),
    ("a plain type", frozenset({"type"})),
)

# OpenAI's json_object: any JSON object.
JSON_OBJECT_SCHEMA: dict = {"type": "object"}


class SchemaNotSupported(InvalidRequest):
    code = "invalid_json_schema"


def schema_grammar(schema: object, param: str = "response_format") -> str:
    """The GBNF for ``schema``; raises SchemaNotSupported (400) naming what is wrong."""
    try:
        text = json.dumps(schema, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        raise SchemaNotSupported("The JSON schema is not JSON.", param=param) from None
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise SchemaNotSupported(f"The JSON schema is {len(text.encode()):,} bytes; at most {MAX_SCHEMA_BYTES:,} "
                                 "are accepted.", param=param)
    return _compiled(text, param)


@functools.lru_cache(maxsize=256)
def _compiled(text: str, param: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    schema = json.loads(text)
    _check(schema, schema, param, path="", depth=0, resolving=())
    try:
        grammar = json_schema_to_gbnf(text)
    except (ValueError, KeyError, TypeError, AssertionError, RecursionError, NotImplementedError) as exc:
        raise SchemaNotSupported(f"The JSON schema cannot be turned into a grammar: {exc}.", param=param) from None
    if len(grammar) > MAX_GRAMMAR_BYTES:
        raise SchemaNotSupported("The JSON schema makes a grammar too large to use; simplify it (fewer "
                                 "alternatives, smaller repetition counts).", param=param)
    return grammar


def _form(node: dict) -> tuple[str, frozenset[str]]:
    """Which form the converter sees in ``node`` (its precedence), and the keywords that form enforces."""
    kind = node.get("type")
    string = kind in (None, "string")
    if "$ref" in node:
        return FORMS[0]
    if "anyOf" in node or "oneOf" in node:
        return FORMS[1]
    if isinstance(kind, list):
        return FORMS[2]
    if "const" in node:
        return FORMS[3]
    if "enum" in node:
        return FORMS[4]
    if kind in (None, "object") and ("properties" in node or node.get("additionalProperties", True) is not True):
        return FORMS[5]
    if kind in (None, "object") and "allOf" in node:
        return FORMS[6]
    if kind in (None, "array") and ("items" in node or "prefixItems" in node):
        return FORMS[7]
    if string and "pattern" in node:
        return FORMS[8]
    if string and "format" in node:
        return FORMS[9]
    if kind == "string" and ("minLength" in node or "maxLength" in node):
        return FORMS[10]
    return FORMS[11]


def _check(node: object, root: dict, param: str, *, path: str, depth: int, resolving: tuple[str, ...]) -> None:
    where = path or "the schema"
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaNotSupported(f"The JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels.", param=param)
    if isinstance(node, bool):
        return  # true / false schemas
    if not isinstance(node, dict):
        raise SchemaNotSupported(f"{where} must be a JSON object (a schema), not {type(node).__name__}.",
                                 param=param)
    form, enforced = _form(node)
    for keyword in node:
        if keyword not in enforced and keyword not in ANNOTATIONS:
            raise SchemaNotSupported(
                f"JSON schema keyword {keyword!r} (at {where}) is not supported for constrained output: in "
                f"{form} only {', '.join(sorted(enforced))} can be enforced. Leave it out, or check the answer "
                "yourself.", param=param)
    kinds = node.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []:
        if kind not in TYPES:
            raise SchemaNotSupported(f"{where}: unknown type {kind!r}.", param=param)
    if "format" in node and node["format"] not in FORMATS:
        raise SchemaNotSupported(f"{where}: format {node['format']!r} is not supported (only "
                                 f"{', '.join(sorted(FORMATS))}).", param=param)
    if "pattern" in node and not (isinstance(node["pattern"], str) and node["pattern"].startswith("^")
                                  and node["pattern"].endswith("$")):
        raise SchemaNotSupported(f"{where}: a pattern must be anchored, starting with ^ and ending with $.",
                                 param=param)
    if "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise SchemaNotSupported(f"{where}: only local references (#/$defs/...) are supported, not {ref!r}.",
                                     param=param)
        if ref in resolving:
            raise SchemaNotSupported(f"{where}: the reference {ref} refers back to itself; recursive schemas are "
                                     "not supported.", param=param)
        target = _resolve(root, ref, where, param)
        _check(target, root, param, path=ref, depth=depth + 1, resolving=(*resolving, ref))
    children = node.get("properties")
    if children is not None:
        if not isinstance(children, dict):
            raise SchemaNotSupported(f"{where}: properties must be an object.", param=param)
        for name, child in children.items():
            _check(child, root, param, path=f"{path}/properties/{name}", depth=depth + 1, resolving=resolving)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _check(node[key], root, param, path=f"{path}/{key}", depth=depth + 1, resolving=resolving)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key in node:
            if not isinstance(node[key], list) or not node[key]:
                raise SchemaNotSupported(f"{where}: {key} must be a non-empty list.", param=param)
            for index, child in enumerate(node[key]):
                _check(child, root, param, path=f"{path}/{key}/{index}", depth=depth + 1, resolving=resolving)
    if isinstance(node.get("items"), list):
        for index, child in enumerate(node["items"]):
            _check(child, root, param, path=f"{path}/items/{index}", depth=depth + 1, resolving=resolving)
    if "required" in node and not (isinstance(node["required"], list)
                                   and all(isinstance(name, str) for name in node["required"])):
        raise SchemaNotSupported(f"{where}: required must be a list of property names.", param=param)


def _resolve(root: dict, ref: str, where: str, param: str) -> object:
    target: object = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            raise SchemaNotSupported(f"{where}: the reference {ref} points at nothing.", param=param)
        target = target[part]
    return target


def grammar_key(grammar: str) -> str:
    return hashlib.sha256(grammar.encode()).hexdigest()


class GrammarLibrary:
    """Parsed grammar samplers for one model's vocabulary, the most recently used kept; each sequence
    gets a clone (a fresh parse state) of its grammar's prototype."""

    def __init__(self, vocab, *, kept: int = GRAMMARS_KEPT):
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._vocab = vocab
        self._kept = kept
        self._prototypes: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, grammar: str) -> None:
        """Parse ``grammar`` now (once per grammar): a grammar llama.cpp rejects is a 400, not an engine error."""
        self._prototype(grammar)

    def constraint(self, grammar: str, n_vocab: int) -> GrammarConstraint:
        prototype = self._prototype(grammar)
        with self._lock:
            sampler = self._llama_cpp.llama_sampler_clone(prototype)
        return GrammarConstraint(self._llama_cpp, sampler, n_vocab)

    def _prototype(self, grammar: str):
        key = grammar_key(grammar)
        with self._lock:
            prototype = self._prototypes.get(key)
            if prototype is not None:
                self._prototypes.move_to_end(key)
                return prototype
            prototype = self._llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
            if not prototype:
                raise InvalidRequest("The grammar for this request could not be parsed by llama.cpp.",
                                     param="response_format", code="invalid_grammar")
            self._prototypes[key] = prototype
            while len(self._prototypes) > self._kept:
                _, old = self._prototypes.popitem(last=False)
                self._llama_cpp.llama_sampler_free(old)
            return prototype

    def close(self) -> None:
        with self._lock:
            for prototype in self._prototypes.values():
                self._llama_cpp.llama_sampler_free(prototype)
            self._prototypes.clear()


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


class GrammarConstraint:
    """One sequence's grammar state: which tokens may come next, and the tokens chosen so far."""

    def __init__(self, llama_cpp, sampler, n_vocab: int):
        self._llama_cpp = llama_cpp
        self.sampler = sampler
        # One candidate, for the cheap check of the token the sampler picked.
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)
        # The whole vocabulary, for masking when that token is refused.
        self._all = (llama_cpp.llama_token_data * n_vocab)()
        self._all_view = np.frombuffer(self._all, dtype=_TOKEN_DATA)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._all_array = llama_cpp.llama_token_data_array(data=self._all, size=n_vocab, selected=-1, sorted=False)

    def allows(self, token: int, logit: float) -> bool:
        self._one[0].id, self._one[0].logit, self._one[0].p = token, logit, 0.0
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        self._llama_cpp.llama_sampler_apply(self.sampler, ctypes.byref(self._one_array))
        return self._one_array.size == 1 and np.isfinite(self._one[0].logit)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A copy of ``logits`` with every token the grammar forbids now at -inf."""
        view = self._all_view
        view["id"] = self._ids  # the grammar compacts the array in place: start from the whole vocabulary
        view["logit"] = logits
        self._all_array.size, self._all_array.selected, self._all_array.sorted = len(view), -1, False
        self._llama_cpp.llama_sampler_apply(self.sampler, ctypes.byref(self._all_array))
        kept = view[: self._all_array.size]
        masked = np.full(len(view), -np.inf, dtype=np.float32)
        masked[kept["id"]] = kept["logit"]
        return masked

    def accept(self, token: int) -> None:
        self._llama_cpp.llama_sampler_accept(self.sampler, token)

    def close(self) -> None:
        if self.sampler is not None:
            self._llama_cpp.llama_sampler_free(self.sampler)
            self.sampler = None

"""Big JSON answers written in steps: `json_response(value)` gives the bytes Starlette's JSONResponse
writes, from json.dumps calls of a few milliseconds each, so that writing the answer of a /tokenize of
megabytes or of thousands of embeddings never holds the GIL long (server/params.py's
`RouteGroup.answer` calls it on the text thread), and `JSONPieces` sends them in pieces with the
event loop free between them.
"""
from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

_STEP = 8192  # JSON values per json.dumps call: a few milliseconds with the GIL held
_CHARS_PER_VALUE = 64  # a string costs one value per this many characters
_FLOAT = 4  # a float costs about as much to write as this many ids or short strings
_SCALARS = frozenset({str, int, float, bool, type(None)})
_SAMPLE = 16  # items sized to tell how many of a long array of alike items make a step
_PIECE = 256 << 10  # bytes of an answer per ASGI message (JSONPieces)


def json_response(value: Any) -> JSONPieces:
    """`value` as a JSON response, as Starlette's JSONResponse writes it (the same bytes), encoded
    in steps of a few milliseconds: a /tokenize of megabytes answers millions of ids, /v1/embeddings
    thousands of vectors, and one json.dumps of them holds the GIL for seconds, freezing every
    other request. Call it off the event loop (`RouteGroup.answer`).

    Objects go key by key; arrays in runs of about _STEP values (ids, small objects, log-
    probabilities), an item that holds more than a step on its own (an embedding's object) by
    itself; strings of more than a step in pieces (JSON escapes each character alone: the pieces
    join to the same text). A long array's items are taken as alike from a sample of them (the
    answers' long arrays are): a wrong guess makes a longer step, never other bytes."""
    pieces: list[bytes] = []
    pending: list[bytes] = []  # encoded text not yet in a piece, `pending_size` bytes
    pending_size = 0

    def out(text: str) -> None:  # encoded as it comes: one encode of it all would be one long step
        nonlocal pending_size
        data = text.encode("utf-8")
        pending.append(data)
        pending_size += len(data)
        if pending_size >= _PIECE:
            pieces.append(b"".join(pending))
            pending.clear()
            pending_size = 0

    def put(v: Any) -> None:
        if isinstance(v, dict) and all(isinstance(k, str) for k in v):
            out("{")
            for i, (k, item) in enumerate(v.items()):
                out(("," if i else "") + _dumps(k) + ":")
                put(item)
            out("}")
        elif isinstance(v, (list, tuple)):
            put_array(v)
        elif isinstance(v, str) and len(v) > _STEP * _CHARS_PER_VALUE:
            n = _STEP * _CHARS_PER_VALUE
            out('"')
            for i in range(0, len(v), n):
                out(_dumps(v[i:i + n])[1:-1])
            out('"')
        else:
            out(_dumps(v))

    def put_array(v: list[Any] | tuple[Any, ...]) -> None:
        out("[")
        first = True
        run: list[Any] = []  # items not written yet, about `weight` values
        weight = 0

        def flush() -> None:
            nonlocal first, run, weight
            if run:
                out(("" if first else ",") + _dumps(run)[1:-1])
                first, run, weight = False, [], 0

        def write(item: Any) -> None:  # a step or more on its own: by itself, in steps
            nonlocal first
            flush()
            out("" if first else ",")
            first = False
            put(item)

        i, n = 0, _STEP  # n: items per chunk, about a step's worth of values by the last chunk
        while i < len(v):
            chunk = v[i:i + n]
            flat = _flat_size(chunk)
            if flat is None:  # items holding arrays or objects (log-probabilities, embeddings, choices)
                sample = chunk[::max(1, len(chunk) // _SAMPLE)]
                sizes = [_size(item, _STEP) for item in sample]
                if len(chunk) > _SAMPLE and max(sizes) < _STEP:  # many small alike items: in runs
                    flush()
                    m = max(1, _STEP * len(sizes) // sum(sizes))
                    for j in range(0, len(chunk), m):
                        out(("" if first else ",") + _dumps(chunk[j:j + m])[1:-1])
                        first = False
                else:  # a few items, or big ones: each one sized, a big one written in steps
                    for item in chunk:
                        size = _size(item, _STEP)
                        if size >= _STEP:
                            write(item)
                        else:
                            run.append(item)
                            weight += size
                            if weight >= _STEP:
                                flush()
            elif flat > 2 * _STEP and len(chunk) > 1:  # too many values in n items: fewer
                n = max(1, len(chunk) * _STEP // flat)
                continue
            elif flat > 2 * _STEP:  # one array or object of scalars: in steps
                write(chunk[0])
            else:  # ids, numbers, small objects: the whole chunk joins the run
                run += chunk
                weight += flat
                if weight >= _STEP:
                    flush()
                n = max(1, min(_STEP, len(chunk) * _STEP // flat))
            i += len(chunk)
        flush()
        out("]")

    put(value)
    if pending:
        pieces.append(b"".join(pending))
    return JSONPieces(pieces)


class JSONPieces(Response):
    """A JSON answer in pieces of about _PIECE bytes (json_response), sent one ASGI message each
    under the whole Content-Length, with the event loop free between them: one message of megabytes
    is megabytes framed and copied at once (100 MB held the loop a quarter of a second), and between
    pieces uvicorn waits for a slow client rather than buffering it all."""

    media_type = "application/json"

    def __init__(self, pieces: list[bytes]) -> None:
        self.status_code = 200
        self.background = None
        self.pieces = pieces or [b""]
        self.init_headers({"content-length": str(sum(map(len, self.pieces)))})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        for i, piece in enumerate(self.pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": i + 1 < len(self.pieces)})
            await asyncio.sleep(0)  # (a send that need not wait for the client does not yield)


def _flat_size(chunk: list[Any] | tuple[Any, ...]) -> int | None:
    """How many JSON values the items of `chunk` hold when they are scalars, or arrays or objects
    of scalars only (strings counted as one value each, numbers as _FLOAT when floats are among
    them), else None: a look at every item at C speed, where _size would call itself per item."""
    kinds = set(map(type, chunk))
    if kinds <= _SCALARS:
        return len(chunk) * (_FLOAT if float in kinds else 1)
    if kinds == {dict}:
        members: Any = itertools.chain.from_iterable(map(dict.values, chunk))
    elif kinds <= {list, tuple}:
        members = itertools.chain.from_iterable(chunk)
    else:
        return None
    kinds = set(map(type, members))
    if kinds <= _SCALARS:
        return len(chunk) + sum(map(len, chunk)) * (_FLOAT if float in kinds else 1)
    return None


def _size(v: Any, limit: int) -> int:
    """About how many JSON values writing `v` costs (_CHARS_PER_VALUE characters of a string as
    one), counted until `limit`: a cheap look, in steps too, at whether v takes more than a step."""
    if isinstance(v, str):
        return 1 + len(v) // _CHARS_PER_VALUE
    if isinstance(v, float):
        return _FLOAT
    if isinstance(v, (list, tuple)):
        total = 1
        for i in range(0, len(v), _STEP):
            chunk = v[i:i + _STEP]
            flat = _flat_size(chunk)
            if flat is not None:
                total += flat
            else:
                for item in chunk:
                    total += _size(item, limit - total)
                    if total >= limit:
                        return total
            if total >= limit:
                return total
        return total
    if isinstance(v, dict):
        total = 1
        for item in v.values():
            total += 1 + _size(item, limit - total)
            if total >= limit:
                break
        return total
    return 1


def takes_steps(value: Any) -> bool:
    """Whether writing value is more than one step (else one json.dumps on the event loop is fine)."""
    return _size(value, _STEP) >= _STEP


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, allow_nan=False, separators=(",", ":"))



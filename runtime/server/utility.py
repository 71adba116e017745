"""llama.cpp server's utility routes: POST /tokenize, POST /detokenize, GET /health, GET /props."""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.server.errors import bad_request
from runtime.server.native import generation_settings
from runtime.server.jsonout import json_response
from runtime.server.params import Fields, RouteGroup, read_json


class UtilityRoutes(RouteGroup):

    def routes(self) -> list[Route]:
        return [
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/detokenize", self.detokenize, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/props", self.props, methods=["GET"]),
        ]

    async def tokenize(self, request: Request) -> Response:
        """{content, add_special=false, parse_special=true, with_pieces=false} -> {tokens}."""
        f = Fields(await read_json(request))
        # megabytes take seconds, and so does writing millions of ids: both on the text thread, in
        # steps, so the event loop keeps serving
        return await self.scheduler.off_loop(lambda: json_response(self._tokenize(f)))

    def _tokenize(self, f: Fields) -> dict[str, Any]:
        content = f.string("content")
        ids = self.engine.tokenize(content, add_special=f.boolean("add_special", False),
                                   parse_special=f.boolean("parse_special", True))
        if f.boolean("with_pieces", False):
            tok = self.engine.tokenizer
            pieces: list[Any] = []
            for t in ids:
                raw = tok.token_to_piece(t, True)
                try:
                    pieces.append({"id": t, "piece": raw.decode("utf-8")})
                except UnicodeDecodeError:  # a partial character: its bytes, as llama.cpp does
                    pieces.append({"id": t, "piece": list(raw)})
            return {"tokens": pieces}
        return {"tokens": ids}

    async def detokenize(self, request: Request) -> Response:
        """{tokens} -> {content}."""
        f = Fields(await read_json(request))
        return await self.scheduler.off_loop(lambda: json_response(self._detokenize(f)))

    def _detokenize(self, f: Fields) -> dict[str, Any]:
        tokens = f.raw("tokens")
        n_vocab = self.engine.model.config.n_vocab
        if tokens is None:
            tokens = []
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise bad_request("'tokens' must be an array of token ids", param="tokens")
        bad = [t for t in tokens if not 0 <= t < n_vocab]
        if bad:
            raise bad_request(f"token id {bad[0]} is outside the vocabulary (0..{n_vocab - 1})", param="tokens")
        # special tokens are written out, as llama.cpp's /detokenize does
        return {"content": self.engine.tokenizer.detokenize(tokens, special=True)}

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", **self.scheduler.status()})

    async def props(self, request: Request) -> Response:
        """What the web UI shows and starts from: the model, the context, and the generation
        settings a request gets when it sets none (llama.cpp's `default_generation_settings`)."""
        eng = self.engine
        name = eng.gguf.metadata.get("general.name")
        return JSONResponse({
            "model_alias": self.model_id,
            "model_name": name if isinstance(name, str) else None,  # the GGUF's general.name
            "model_path": eng.gguf.path,
            "n_ctx": eng.n_ctx,
            "total_slots": len(self.scheduler.slots),
            "chat_template": eng.template.source,  # the Jinja source, as llama.cpp's /props
            "chat_template_name": eng.template.name,  # "gguf", a built-in's name or "custom"
            "default_generation_settings": {"n_ctx": eng.n_ctx, "params": self._default_params()},
            "slots": self.scheduler.slot_info(),
        })

    def _default_params(self) -> dict[str, Any]:
        d = self.defaults
        # n_predict: a chat's and /completion's default; /v1/completions has 16 unless -n was given
        return generation_settings(d.sampling, d.max_tokens_or(-1), list(d.stop), ignore_eos=d.ignore_eos,
                                   grammar=d.grammar or "")

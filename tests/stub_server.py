"""A deterministic LM server on 127.0.0.1 that speaks Ollama's and OpenAI's chat APIs.

It answers DSPy ChatAdapter prompts: it reads the output fields the prompt asks for and fills them, taking the
`answer` field from a table of known questions (so a test knows the right score by construction). It counts calls
and model loads so that tests can assert how much work a run did.

On `/api/chat` it behaves like a real Ollama where that can change a result:
- the context window is `options.num_ctx` if the request sets it, else the server default (`default_ctx`, what
  `OLLAMA_CONTEXT_LENGTH` sets: 4096 on GPUs under 24 GiB, 2048 before Ollama 0.6; docs/faq "How can I specify
  the context window size?");
- a chat prompt longer than the window is cut silently: the oldest non-system messages are dropped until the rest
  fits, the latest message always kept (server/prompt.go `chatPrompt`), and a latest message that alone does not
  fit is cut to the window (the runner's "truncating input prompt ... limit=4096"); `prompt_eval_count` counts only
  what was kept, and nothing in the response says that anything was dropped;
- a request whose `num_ctx` differs from the one the model is loaded with reloads the model (counted in `loads`);
- it streams (NDJSON chunks, the last with `done: true` and the counts) unless the request says `"stream": false`;
- an unknown model is a 404 `{"error": "model 'x' not found, try pulling it first"}` (server/routes.go, ollama PR
  #718); `/api/show` reports `model_info["<arch>.context_length"]` (the model's own maximum, `max_ctx`).
With `flavor="vllm"` it is vLLM's OpenAI-compatible server where that can change a result: `GET /health` is an
empty 200 once the engine is up (503 while `ready` is false); `GET /v1/models` lists vLLM's `ModelCard`s, with
`owned_by: vllm`, `root` (the weights the server was started from, `roots`) and `max_model_len` (`v1_ctx`, else
`default_ctx`) (vllm/entrypoints/openai/protocol.py); a chat request whose prompt plus `max_tokens` exceeds
`max_model_len` is refused with a 400 `BadRequestError` "This model's maximum context length is N tokens. However,
you requested M tokens (P in the messages, C in the completion)…" (vllm-project/vllm#20409), never cut; `usage`
counts the prompt and completion tokens.
The stub's tokenizer is whitespace words plus `MESSAGE_OVERHEAD` tokens per message for the chat template's role
markers: not any model's tokenizer, but monotone in the prompt's length, which is what truncation depends on.

Run by hand: `python tests/stub_server.py --port 11434` (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[str, list[dict[str, Any]]], str]

_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]")


def chat_adapter_reply(fields: dict[str, str]) -> str:
    """A reply in DSPy's ChatAdapter format with the given output fields."""
    parts = [f"[[ ## {name} ## ]]\n{value}\n" for name, value in fields.items()]
    return "\n".join([*parts, "[[ ## completed ## ]]"])


def requested_output_fields(messages: list[dict[str, Any]]) -> list[str]:
    """Output field names that the last user message asks for ("Respond with ... `[[ ## x ## ]]` ...")."""
    last = _text(messages[-1]) if messages else ""
    tail = last.split("Respond with", 1)[1] if "Respond with" in last else ""
    return [f for f in _FIELD.findall(tail) if f != "completed"]


_REPLY_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]\n(.*?)\n", re.DOTALL)


def _requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The output schema a request enforces: llama.cpp's `{"type": "json_object", "schema"}`, OpenAI's
    `{"type": "json_schema", "json_schema": {"schema"}}`, or Ollama's `format: <schema>`."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return schema
    if isinstance(body.get("format"), dict):
        return body["format"]
    return None


def _text(message: dict[str, Any]) -> str:
    content = message.get("content", "")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def table_responder(answers: dict[str, str], default: str = "0", think: str | None = None) -> Responder:
    """Answer with `answers[q]` when a known question `q` appears in the last user message, else `default`."""

    def respond(model: str, messages: list[dict[str, Any]]) -> str:
        last = _text(messages[-1]) if messages else ""
        answer = next((a for q, a in answers.items() if q in last), default)
        fields = requested_output_fields(messages) or ["answer"]
        values = {f: (answer if f == "answer" else f"stub {f} for {model}") for f in fields}
        reply = chat_adapter_reply(values)
        return f"<think>{think}</think>\n{reply}" if think else reply

    return respond


def cut_to(text: str, cap: int) -> tuple[str, str]:
    """(what a server generating at most `cap` tokens returns, its finish reason): the first `cap` words."""
    words = list(re.finditer(r"\S+", text))
    if len(words) <= cap:
        return text, "stop"
    return text[: words[cap - 1].end()] if cap > 0 else "", "length"


MESSAGE_OVERHEAD = 4
"""Template tokens per chat message in the stub's count (role markers and separators)."""


def message_tokens(message: dict[str, Any]) -> int:
    return len(_text(message).split()) + MESSAGE_OVERHEAD


def fit_context(messages: list[dict[str, Any]], num_ctx: int) -> tuple[list[dict[str, Any]], int]:
    """What Ollama keeps of a chat prompt in a window of `num_ctx` tokens, and how many tokens that is: system
    messages and the latest message always, then as many of the most recent others as fit; a latest message
    that alone overflows is cut to the window."""
    if not messages:
        return [], 0
    system = [m for m in messages[:-1] if m.get("role") == "system"]
    others = [m for m in messages[:-1] if m.get("role") != "system"]
    used = sum(message_tokens(m) for m in system) + message_tokens(messages[-1])
    kept: list[dict[str, Any]] = []
    for message in reversed(others):
        cost = message_tokens(message)
        if used + cost > num_ctx:
            break  # Ollama stops at the first message that does not fit: older ones are gone too
        kept.insert(0, message)
        used += cost
    order = [m for m in messages[:-1] if m.get("role") == "system" or any(m is k for k in kept)] + [messages[-1]]
    return order, min(used, num_ctx)


@dataclass
class StubState:
    """What the server has seen: calls and loads per model, and every request body (for leak checks)."""

    models: list[str]
    responder: Responder
    loaded: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    loads: Counter[str] = field(default_factory=Counter)
    bodies: list[str] = field(default_factory=list)
    paths: Counter[str] = field(default_factory=Counter)
    auth_headers: set[str] = field(default_factory=set)
    faults: list[str] = field(default_factory=list)
    """Faults for the next chat calls, one per call, consumed in order: "429", "500", "stall", "drop"."""
    fault_always: str | None = None
    """A fault for every chat call once `faults` is empty (None: answer normally)."""
    stall_seconds: float = 30.0
    """How long a "stall" holds the connection open without answering (bounded, so the handler thread ends)."""
    fault_log: list[str] = field(default_factory=list)
    _loading: set[str] = field(default_factory=set)
    slots: int = 0
    """Simulation: requests served at once (Ollama's OLLAMA_NUM_PARALLEL); more wait. 0: no limit."""
    call_seconds: float = 0.0
    """Simulation: time one answer takes once the model is loaded (the GPU's generation time)."""
    load_seconds: float = 0.0
    """Simulation: time to load a model that is not in memory."""
    max_loaded: int = 1
    """Models held in memory at once (OLLAMA_MAX_LOADED_MODELS): loading another evicts the least recently used
    idle one, or waits until one is idle."""
    busy_seconds: float = 0.0
    """Simulated generation time served so far (loads not included)."""
    served: list[tuple[float, float]] = field(default_factory=list)
    """(start, end) Unix times of every generation served (loads not included): a timeline of slot use."""
    active: Counter[str] = field(default_factory=Counter)
    schemas: list[dict[str, Any]] = field(default_factory=list)
    """JSON schemas that structured-output requests asked for (llama.cpp, OpenAI or Ollama form)."""
    digests: dict[str, str] = field(default_factory=dict)
    """Model digest reported by /api/tags (default "stub"): change it to simulate a re-pulled model."""
    flavor: str = ""
    """"" (Ollama's and OpenAI's APIs) or "vllm" (vLLM's OpenAI-compatible server, see the module's docstring)."""
    ready: bool = True
    """vllm: whether `/health` says the engine is up."""
    roots: dict[str, str] = field(default_factory=dict)
    """vllm: the weights each served name was started from (`ModelCard.root`); default `/models/<name>`."""
    gets: Counter[str] = field(default_factory=Counter)
    """GET requests by path."""
    default_ctx: int = 4096
    """Context window of a request that sets no `options.num_ctx` (Ollama's OLLAMA_CONTEXT_LENGTH)."""
    max_ctx: int = 32768
    """The models' own maximum context, reported by /api/show."""
    loaded_ctx: dict[str, int] = field(default_factory=dict)
    """The context each resident model was loaded with: a request with another reloads it."""
    num_ctx_seen: dict[str, set[int]] = field(default_factory=dict)
    """Every context window each model was asked to serve with (requests without num_ctx: the default)."""
    truncated: Counter[str] = field(default_factory=Counter)
    """Chat calls whose prompt the stub cut to fit the window, per model (what a real Ollama never reports)."""
    streamed: int = 0
    """/api/chat answers sent as a stream (requests that did not say "stream": false)."""
    v1_ctx: int = 0
    """The context of the OpenAI-style route (0: unlimited). A longer prompt is refused with a 400, as llama.cpp's
    server does ("exceed_context_size_error", tools/server) and OpenAI does ("context_length_exceeded")."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self) -> str | None:
        with self.lock:
            fault = self.faults.pop(0) if self.faults else self.fault_always
            if fault:
                self.fault_log.append(fault)
            return fault

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)
        self._slots = threading.BoundedSemaphore(self.slots) if self.slots else None

    def serve(self, model: str, num_ctx: int | None = None) -> None:
        """Serve one call of `model`: take a slot, load the model if it is not in memory (counted), generate.
        With `num_ctx` (an Ollama chat), a model loaded with another context is loaded again."""
        with self._slots or contextlib.nullcontext():
            with self.changed:
                self.calls[model] += 1
                if num_ctx is not None:
                    self.num_ctx_seen.setdefault(model, set()).add(num_ctx)
                    if model in self.loaded and self.loaded_ctx.get(model) != num_ctx and not self.active[model]:
                        self.loaded.remove(model)  # Ollama unloads and reloads the runner with the new size
                    self.loaded_ctx[model] = num_ctx
                while model not in self.loaded or model in self._loading:
                    if model in self._loading:
                        self.changed.wait()
                        continue
                    idle = [m for m in self.loaded if not self.active[m] and m not in self._loading]
                    if len(self.loaded) >= self.max_loaded and not idle:
                        self.changed.wait()  # every resident model is busy: wait for one to go idle
                        continue
                    if len(self.loaded) >= self.max_loaded:
                        self.loaded.remove(idle[0])
                    self.loads[model] += 1
                    self.loaded.append(model)
                    self._loading.add(model)
                    self.changed.release()
                    try:
                        time.sleep(self.load_seconds)
                    finally:
                        self.changed.acquire()
                        self._loading.discard(model)
                        self.changed.notify_all()
                self.loaded.remove(model)
                self.loaded.append(model)  # most recently used last
                self.active[model] += 1
            began = time.time()
            try:
                time.sleep(self.call_seconds)
            finally:
                with self.changed:
                    self.active[model] -= 1
                    self.busy_seconds += self.call_seconds
                    self.served.append((began, time.time()))
                    self.changed.notify_all()


class _Handler(BaseHTTPRequestHandler):
    server: _StubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request stderr lines
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, final: dict[str, Any]) -> None:
        """Ollama's streamed answer: one NDJSON object per piece of the reply, then the final one with the counts
        and an empty message (a client that reads only the last line gets no text)."""
        with self.server.state.lock:
            self.server.state.streamed += 1
        text = final["message"]["content"]
        pieces = [text[i : i + 16] for i in range(0, len(text), 16)] or [""]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()  # HTTP/1.0 and no length: the body ends when the connection closes
        lines = [{**final, "message": {"role": "assistant", "content": p}, "done": False} for p in pieces]
        lines = [{k: v for k, v in line.items() if k not in ("done_reason", "prompt_eval_count", "eval_count")}
                 for line in lines]  # fmt: skip
        lines.append({**final, "message": {"role": "assistant", "content": ""}})
        for line in lines:
            self.wfile.write((json.dumps(line) + "\n").encode())
            self.wfile.flush()
        self.close_connection = True

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else "{}"
        with self.server.state.lock:
            self.server.state.bodies.append(raw)
            if self.headers.get("Authorization"):
                self.server.state.auth_headers.add(self.headers["Authorization"])
        return json.loads(raw or "{}")

    def _known(self, model: str) -> bool:
        names = self.server.state.models
        return model in names or model.removesuffix(":latest") in names

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            state.gets[self.path] += 1
        if state.flavor == "vllm":
            self._vllm_get()
        elif self.path in ("/", "/api/version"):
            self._send(200, {"version": "0.0.0-stub"})
        elif self.path == "/api/tags":
            tags = [{"name": m, "model": m, "size": 1, "digest": state.digests.get(m, "stub")} for m in state.models]
            self._send(200, {"models": tags})
        elif self.path == "/api/ps":
            self._send(200, {"models": [{"name": m, "model": m, "size": 1} for m in state.loaded]})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in state.models]})
        elif self.path == "/health":
            # llama-server's readiness check: 503 "Loading model" until the weights are in (tools/server README)
            if state.ready:
                self._send(200, {"status": "ok"})
            else:
                self._send(503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def _vllm_get(self) -> None:
        state = self.server.state
        if self.path == "/health":
            self.send_response(200 if state.ready else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/v1/models":
            window = state.v1_ctx or state.default_ctx
            cards = [{"id": m, "object": "model", "created": 0, "owned_by": "vllm", "parent": None,
                      "root": state.roots.get(m, f"/models/{m}"), "max_model_len": window, "permission": []}
                     for m in state.models]  # fmt: skip
            self._send(200, {"object": "list", "data": cards})
        else:
            self._send(404, {"detail": "Not Found"})  # FastAPI's 404

    def do_POST(self) -> None:
        state = self.server.state
        body = self._body()
        model = str(body.get("model", ""))
        if self.path == "/api/pull":
            with state.lock:
                if model not in state.models:
                    state.models.append(model)
            self._send(200, {"status": "success"})
            return
        if self.path == "/api/show":
            if not self._known(model):
                self._send(404, {"error": f"model '{model}' not found"})
                return
            self._send(
                200,
                {
                    "details": {"family": "stub"},
                    "model_info": {"general.architecture": "stub", "stub.context_length": state.max_ctx},
                },
            )
            return
        if self.path not in ("/api/chat", "/v1/chat/completions"):
            self._send(404, {"error": f"no route {self.path}"})
            return
        if not self._known(model):
            self._send(404, {"error": f"model '{model}' not found, try pulling it first"})
            return
        fault = state.next_fault()
        if fault == "429":
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            data = json.dumps({"error": {"message": "rate limited", "type": "rate_limit_error"}}).encode()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if fault == "500":
            self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
            return
        if fault == "stall":
            time.sleep(state.stall_seconds)
            self.close_connection = True
            return
        if fault == "drop":
            self.close_connection = True  # no status line: the client sees the connection closed
            return
        messages = body.get("messages", [])
        prompt_tokens = sum(message_tokens(m) for m in messages)
        if self.path == "/api/chat":
            num_ctx = int((body.get("options") or {}).get("num_ctx") or state.default_ctx)
            state.serve(model, num_ctx)
            kept, prompt_tokens = fit_context(messages, num_ctx)
            if len(kept) < len(messages) or prompt_tokens >= num_ctx:
                with state.lock:
                    state.truncated[model] += 1
            messages = kept  # the model answers what it was shown, like a real one
        elif state.flavor == "vllm":
            window = state.v1_ctx or state.default_ctx
            wanted = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
            if prompt_tokens + wanted > window:
                with state.lock:
                    state.calls[model] += 1
                    state.paths[self.path] += 1
                self._send(400, {"object": "error", "type": "BadRequestError", "param": None, "code": 400,
                                 "message": f"This model's maximum context length is {window} tokens. However, you "
                                            f"requested {prompt_tokens + wanted} tokens ({prompt_tokens} in the "
                                            f"messages, {wanted} in the completion). Please reduce the length of "
                                            "the messages or completion."})  # fmt: skip
                return
            state.serve(model)
        else:
            if state.v1_ctx and prompt_tokens > state.v1_ctx:
                with state.lock:
                    state.calls[model] += 1
                    state.paths[self.path] += 1
                self._send(400, {"error": {
                    "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": prompt_tokens,
                    "n_ctx": state.v1_ctx,
                    "message": f"request ({prompt_tokens} tokens) exceeds the available context size "
                               f"({state.v1_ctx} tokens), try increasing it",
                }})  # fmt: skip
                return
            state.serve(model)
        with state.lock:
            state.paths[self.path] += 1
        text = state.responder(model, messages)
        schema = _requested_schema(body)
        if schema is not None:  # structured outputs: the same values, as the JSON object the schema describes
            with state.lock:
                state.schemas.append(schema)
            values = dict(_REPLY_FIELD.findall(text))
            text = json.dumps({name: values.get(name, f"stub {name}") for name in schema.get("properties", {})})
        # A real server stops generating at the request's cap and says so: Ollama `options.num_predict` (what
        # LiteLLM sends for max_tokens) with done_reason "length" (Ollama's API docs: stop, length, load); OpenAI and
        # llama.cpp `max_tokens` / `max_completion_tokens` with finish_reason "length". The stub counts words.
        options = body.get("options") or {}
        cap = options.get("num_predict") or body.get("max_tokens") or body.get("max_completion_tokens")
        text, reason = cut_to(text, int(cap)) if cap else (text, "stop")
        completion_tokens = len(text.split())
        if self.path == "/api/chat":
            final = {
                "model": model,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "message": {"role": "assistant", "content": text},
                "done": True,
                "done_reason": reason,
                "prompt_eval_count": prompt_tokens,
                "eval_count": completion_tokens,
            }
            if body.get("stream", True) is False:
                self._send(200, final)
            else:
                self._stream(final)
        else:
            self._send(
                200,
                {
                    "id": f"stub-{state.calls.total()}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": reason,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                },
            )


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: StubState) -> None:
        super().__init__(address, _Handler)
        self.state = state


class StubServer:
    """Context manager: a stub LM server on a free 127.0.0.1 port, served from a background thread."""

    def __init__(
        self, models: list[str], responder: Responder | None = None, port: int = 0, **simulation: float
    ) -> None:
        """`simulation`: StubState's `slots`, `call_seconds`, `load_seconds`, `max_loaded` (a simulated GPU node)."""
        self.state = StubState(models=list(models), responder=responder or table_responder({}), **simulation)  # type: ignore[arg-type]
        self._httpd = _StubHTTPServer(("127.0.0.1", port), self.state)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--models", nargs="+", default=["llama3.2", "gpt-4o"])
    parser.add_argument("--flavor", default="", help='"" (Ollama and OpenAI) or "vllm"')
    parser.add_argument("--root", help="vllm: the weights every model was started from (ModelCard.root)")
    args = parser.parse_args()
    with StubServer(args.models, port=args.port, flavor=args.flavor) as server:  # type: ignore[arg-type]
        if args.root:
            server.state.roots.update({m: args.root for m in args.models})
        print(f"stub LM server on {server.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

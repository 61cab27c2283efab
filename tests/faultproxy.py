"""A fault-injecting HTTP proxy for an OpenAI-compatible server (tests only).

Chat-completion requests take the next fault from a schedule; everything else (and requests past the schedule) is
forwarded unchanged. Faults: ``429`` and ``500`` (answered by the proxy), ``timeout`` (hold the request, answer
nothing), ``truncated`` (the real answer with its body cut in half), ``malformed`` (the real answer's JSON content
cut in half), ``schema`` (valid JSON that is not the schema), ``think`` (a ``<think>`` block before the content),
``reasoning`` (a separate ``reasoning_content`` field, as vLLM's reasoning parsers send).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

import httpx


class FaultProxy:
    def __init__(self, upstream: str, schedule: list[str], hold_s: float = 30.0):
        self.upstream = upstream.rstrip("/")
        self.schedule = list(schedule)
        self.hold_s = hold_s
        self.injected: Counter = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    # ---- lifecycle
    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._client = httpx.AsyncClient(timeout=600)
        self._ready.set()
        self._loop.run_forever()

    # ---- one connection = one request (Connection: close)
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            fault = "pass"
            if path.endswith("/chat/completions") and self.schedule:
                fault = self.schedule.pop(0)
            self.injected[fault] += 1
            await self._answer(writer, fault, method, path, headers, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _answer(self, writer, fault, method, path, headers, body) -> None:
        if fault in ("429", "500"):
            status = int(fault)
            payload = json.dumps({"error": {"message": f"injected {fault}", "type": "injected"}}).encode()
            return await self._send(writer, status, payload, {"retry-after": "0"})
        if fault == "timeout":
            await asyncio.sleep(self.hold_s)
            return
        fwd = {k: v for k, v in headers.items() if k in ("content-type", "authorization", "accept")}
        r = await self._client.request(method, self.upstream + path, content=body, headers=fwd)
        payload = r.content
        if fault in ("malformed", "schema", "think", "reasoning") and r.status_code == 200:
            data = r.json()
            msg = data["choices"][0]["message"]
            content = msg.get("content") or ""
            if fault == "malformed":
                msg["content"] = content[: max(1, len(content) // 2)]
            elif fault == "schema":
                msg["content"] = json.dumps({"items": "none", "note": "not the requested schema"})
            elif fault == "think":
                msg["content"] = "<think>The user wants pairs. {draft: [ not json yet</think>\n" + content
            else:
                msg["reasoning_content"] = "First I read the excerpt, then I write the questions."
            payload = json.dumps(data).encode()
        if fault == "truncated":
            return await self._send(writer, r.status_code, payload, {}, cut=len(payload) // 2)
        await self._send(writer, r.status_code, payload, {})

    @staticmethod
    async def _send(writer, status: int, payload: bytes, extra: dict, cut: int | None = None) -> None:
        reason = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error"}.get(status, "Status")
        head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(payload)}",
                "Connection: close", *(f"{k}: {v}" for k, v in extra.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (payload if cut is None else payload[:cut]))
        await writer.drain()

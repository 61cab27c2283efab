"""The one client for every OpenAI-compatible endpoint tunebook talks to: the teacher (02's synthesis, 05's judge),
a served student (05's checks), the smoke tests of 01, and a server's ``/health``, ``/v1/models`` and ``/tokenize``.

One aiohttp path for all of them: plain JSON over a connection pool, retries with backoff in one place
(:meth:`Client._retrying`: 429, 5xx, timeouts, dropped connections, bodies cut short; a 4xx other than 429 is
:class:`Rejected` at once), and every failed attempt reported to ``on_fault`` by kind, also those a retry fixed (02
counts them; ``tests/test_synth_faults.py`` checks the counts through ``tests/faultproxy.py``). Lean on purpose: on
the 2-core CI machine the openai client capped synthesis at 260–460 requests/s with its typed ``create()`` and
~1,100 with its low-level ``post()`` over aiohttp (request building and typed responses cost ~1 ms of CPU a
request); this path measured 2,800–3,600 (benchmarks/synth_throughput.py), so the client is never what limits a
fast teacher.

Async code uses :class:`Client`; sync code the functions below it (:func:`complete`, :func:`complete_all`,
:func:`stream`, :func:`health`, :func:`models`, :func:`tokenize`), which run the same code through :func:`run_sync`
(also inside Jupyter's running event loop). The API key is passed in by the caller, who reads it from the
environment variable named in settings (``Teacher.api_key()``); it only ever goes into the Authorization header.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar

T = TypeVar("T")


class EndpointError(Exception):
    """A request that failed; ``kind`` names how (one of synthesize's FAILURE_KINDS)."""

    kind = "connection"


class Transient(EndpointError):
    """A failed attempt worth retrying (429, 5xx, timeout, dropped connection, body cut short)."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


class Rejected(EndpointError):
    """The endpoint refused the request (4xx other than 429): not retried; for a response format, try the next."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.kind, self.status = "http_4xx", status


def _backoff(state) -> float:
    """Exponential backoff with jitter (0.5 s → 8 s), at least the server's Retry-After."""
    from tenacity import wait_exponential, wait_random

    wait = (wait_exponential(multiplier=0.5, max=8.0) + wait_random(0, 0.5))(state)
    exc = state.outcome.exception() if state.outcome else None
    ra = getattr(exc, "retry_after", None)
    return max(wait, ra) if ra else wait


def _no_fault(kind: str, detail: str) -> None:  # noqa: ARG001
    pass


def message(data: dict[str, Any]) -> tuple[str, str, str | None]:
    """(content, reasoning, finish_reason) of a chat completion's first choice."""
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    return msg.get("content") or "", msg.get("reasoning_content") or msg.get("reasoning") or "", \
        choice.get("finish_reason")


class Client:
    """One endpoint (``base_url`` ends in ``/v1``): an aiohttp connection pool. Create it inside a running event
    loop (``async with Client(...) as c``)."""

    def __init__(self, base_url: str, api_key: str = "", timeout: float = 600.0, max_retries: int = 3,
                 on_fault: Callable[[str, str], None] | None = None, pool: int = 1000):
        import aiohttp

        self.base = base_url.rstrip("/")
        self.url = self.base + "/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool),
                                             timeout=aiohttp.ClientTimeout(total=timeout))
        self.max_retries = max_retries
        self.on_fault = on_fault or _no_fault

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.session.close()

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /chat/completions``, retried; the parsed JSON answer."""
        return await self.request("POST", self.url, body)

    async def request(self, method: str, url: str, body: Any = None) -> Any:
        """Any JSON request to ``url``, retried."""
        return await self._retrying(lambda: self._once(method, url, body))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[str]:
        """``POST /chat/completions`` with ``stream: true``: the content deltas as they arrive (the request is
        retried until the answer starts; a stream cut short afterwards raises)."""
        import aiohttp

        r = await self._retrying(lambda: self._open(self.url, {**body, "stream": True}))
        try:
            async for line in r.content:
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                try:
                    data = json.loads(payload)
                except ValueError:
                    continue
                delta = ((data.get("choices") or [{}])[0].get("delta") or {}).get("content")
                if delta:
                    yield delta
        except (asyncio.TimeoutError, aiohttp.ClientError) as e:
            raise self._transport_fault(self.url, e) from e
        finally:
            r.release()

    async def status(self, url: str) -> int:
        """The HTTP status of one ``GET`` (no retries); a transport failure raises :class:`Transient`."""
        return (await self._send("GET", url, None))[0]

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

        async for a in AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1), wait=_backoff,
                                     retry=retry_if_exception_type(Transient), reraise=True):
            with a:
                return await attempt()
        raise AssertionError("unreachable")  # pragma: no cover

    def _fault(self, url: str, kind: str, detail: str, retry_after: float | None = None) -> Transient:
        self.on_fault(kind, f"{url}: {detail}")
        return Transient(kind, detail, retry_after)

    def _transport_fault(self, url: str, e: BaseException) -> Transient:
        import aiohttp

        if isinstance(e, asyncio.TimeoutError):
            return self._fault(url, "timeout", f"no answer within the request timeout ({type(e).__name__})")
        if isinstance(e, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            return self._fault(url, "truncated_stream", f"body cut short: {type(e).__name__}: {e}")
        return self._fault(url, "connection", f"{type(e).__name__}: {e}")

    def _check(self, url: str, status: int, raw: bytes, retry_after: str | None) -> None:
        if status == 429 or status >= 500:
            try:
                ra = float(retry_after) if retry_after else None
            except ValueError:
                ra = None
            raise self._fault(url, "http_429" if status == 429 else "http_5xx", f"HTTP {status}: {raw[:200]!r}", ra)
        if status >= 400:
            self.on_fault("http_4xx", f"{url}: HTTP {status}: {raw[:200]!r}")
            raise Rejected(status, raw[:300].decode("utf-8", "replace"))

    async def _send(self, method: str, url: str, body: Any) -> tuple[int, bytes, str | None]:
        import aiohttp

        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        try:
            async with self.session.request(method, url, data=data, headers=self.headers) as r:
                return r.status, await r.read(), r.headers.get("Retry-After")
        except (asyncio.TimeoutError, aiohttp.ClientError) as e:
            raise self._transport_fault(url, e) from e

    async def _once(self, method: str, url: str, body: Any) -> Any:
        status, raw, retry_after = await self._send(method, url, body)
        self._check(url, status, raw, retry_after)
        try:
            return json.loads(raw)
        except ValueError as e:
            raise self._fault(url, "truncated_stream", f"HTTP {status} with a body that is not JSON: {raw[:120]!r}") from e

    async def _open(self, url: str, body: Any):
        import aiohttp

        try:
            r = await self.session.post(url, data=json.dumps(body, ensure_ascii=False).encode(), headers=self.headers)
        except (asyncio.TimeoutError, aiohttp.ClientError) as e:
            raise self._transport_fault(url, e) from e
        if r.status >= 400:
            try:
                raw = await r.read()
            finally:
                r.release()
            self._check(url, r.status, raw, r.headers.get("Retry-After"))
        return r


# ---- sync code ------------------------------------------------------------------------------------------------


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine from sync code, also inside Jupyter's already running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(factory())  # type: ignore[arg-type]
        except BaseException as e:  # re-raised in the caller's thread
            result["error"] = e

    th = threading.Thread(target=target)
    th.start()
    th.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


async def _using(base_url: str, api_key: str, timeout: float, max_retries: int,
                 use: Callable[[Client], Awaitable[T]]) -> T:
    async with Client(base_url, api_key, timeout, max_retries) as c:
        return await use(c)


def _with_client(base_url: str, api_key: str, timeout: float, max_retries: int,
                 use: Callable[[Client], Awaitable[T]]) -> T:
    return run_sync(lambda: _using(base_url, api_key, timeout, max_retries, use))


def complete(base_url: str, api_key: str, body: dict[str, Any], timeout: float = 600.0,
             max_retries: int = 3) -> dict[str, Any]:
    """One chat completion (the parsed JSON answer)."""
    return _with_client(base_url, api_key, timeout, max_retries, lambda c: c.chat(body))


def complete_all(base_url: str, api_key: str, bodies: list[dict[str, Any]], concurrency: int,
                 timeout: float = 600.0, max_retries: int = 3,
                 on_done: Callable[[int, Any], None] | None = None, url: str = "") -> list[Any]:
    """Every chat completion (or, with ``url``, every POST to that endpoint, e.g. llama-server's ``/completion``),
    ``concurrency`` at a time; in order, each the parsed answer or the exception its request ended with.
    ``on_done(i, result)`` is called as each one finishes."""
    async def all_of(c: Client) -> list[Any]:
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(i: int, body: dict[str, Any]) -> Any:
            async with sem:
                try:
                    result: Any = await (c.request("POST", url, body) if url else c.chat(body))
                except Exception as e:
                    result = e
            if on_done is not None:
                on_done(i, result)
            return result

        return list(await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies))))

    return _with_client(base_url, api_key, timeout, max_retries, all_of)


def stream(base_url: str, api_key: str, body: dict[str, Any], timeout: float = 600.0,
           max_retries: int = 3) -> Iterator[str]:
    """A streamed chat completion's content deltas, as they arrive (the request runs in a thread of its own)."""
    pieces: queue.Queue = queue.Queue()
    end = object()

    def target() -> None:
        async def pump(c: Client) -> None:
            async for piece in c.stream(body):
                pieces.put(piece)

        try:
            asyncio.run(_using(base_url, api_key, timeout, max_retries, pump))
        except BaseException as e:  # re-raised in the reader's thread
            pieces.put(e)
        finally:
            pieces.put(end)

    th = threading.Thread(target=target, daemon=True)
    th.start()
    while (item := pieces.get()) is not end:
        if isinstance(item, BaseException):
            raise item
        yield item
    th.join()


def server_root(base_url: str) -> str:
    """``http://host:port`` of an endpoint ``http://host:port/v1`` (where ``/health`` and ``/tokenize`` are)."""
    return base_url.rstrip("/").removesuffix("/v1")


def health(server_url: str, timeout: float = 2.0) -> bool:
    """Whether ``GET server_url/health`` answers 200 (no retries: callers poll)."""
    async def check(c: Client) -> bool:
        try:
            return await c.status(c.base + "/health") == 200
        except EndpointError:
            return False

    return _with_client(server_root(server_url), "", timeout, 0, check)


def models(base_url: str, api_key: str = "", timeout: float = 3.0) -> list[str]:
    """Model ids an endpoint reports under ``/models`` ([] if nothing answers)."""
    try:
        data = _with_client(base_url, api_key, timeout, 0, lambda c: c.request("GET", c.base + "/models"))
    except EndpointError:
        return []
    items = data.get("data", []) if isinstance(data, dict) else []
    return [m.get("id", "") for m in items if isinstance(m, dict)]


def tokenize(server_url: str, text: str, api_key: str = "", model: str = "", timeout: float = 60.0,
             max_retries: int = 3) -> int:
    """Token count of ``text`` by a server's ``/tokenize``: vLLM's (``model`` given: ``{"model", "prompt"}`` →
    ``count``) or llama-server's (``{"content"}`` → ``tokens``)."""
    root = server_root(server_url)
    body = {"model": model, "prompt": text} if model else {"content": text}
    data = _with_client(root, api_key, timeout, max_retries, lambda c: c.request("POST", c.base + "/tokenize", body))
    return int(data["count"]) if model else len(data["tokens"])

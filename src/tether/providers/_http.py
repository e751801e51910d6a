"""What the HTTP providers share: secret handling, SSE parsing, error mapping.

Private to ``tether.providers``. The rule it enforces: a credential never
reaches an exception message, a log line or a repr. Keys are held in
:class:`Secret`, upstream error texts pass through :func:`redact`, and errors
are built from the status and the upstream's message only (never from request
headers or httpx exception texts that could carry them).
"""

from __future__ import annotations

import contextlib
import logging
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from tether.observability import metrics
from tether.providers._transport import LeanTransport, Sent
from tether.providers.base import ProviderError
from tether.providers.redaction import Redactor, check_credential

log = logging.getLogger("tether.providers")

#: Connect quickly or fail; reads may pause a long time while a model thinks.
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=10.0)

_MAX_ERROR_TEXT = 500
#: Pages of a models list read at most (Anthropic's: up to 1000 models each).
_MAX_MODEL_PAGES = 20
_SECRET_HEADER_HINTS = ("auth", "key", "token", "secret", "cookie", "password")


class Secret:
    """A credential whose repr and str never show it; ``get()`` is the only way in."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def secret_values(api_key: Secret | None, headers: Mapping[str, str]) -> tuple[Secret, ...]:
    """Every value worth redacting: the key and the values of credential-like headers."""
    values = [api_key] if api_key else []
    for name, value in headers.items():
        if value and any(hint in name.lower() for hint in _SECRET_HEADER_HINTS):
            values.append(Secret(value))
    return tuple(values)


def redact(text: str, secrets: Iterable[Secret]) -> str:
    """``text`` with every form of every secret (masked, base64...) replaced by ``***``.

    Upstream error texts quote keys masked (OpenAI: ``sk-ab****wxyz``); the
    credential-like fields of other people's texts are left alone here, as
    they are the upstream's words to the client.
    """
    return Redactor((s.get() for s in secrets), credential_fields=False)(text)


def display_url(url: str) -> str:
    """``url`` without user info or query (either may carry a credential)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid url>"
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))


def check_base_url(url: str) -> str:
    """``url`` without a trailing slash; ValueError (credential-free) if not http(s)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise ValueError(f"invalid base URL: {display_url(str(url))}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"base URL must be http(s)://host[...]: {display_url(url)}")
    return url.rstrip("/")


def make_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """A number means the read timeout (the pause allowed between chunks)."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(
        connect=min(10.0, float(timeout)), read=float(timeout), write=30.0, pool=10.0
    )


def is_transient_status(status: int) -> bool:
    """Worth retrying: rate limits, server errors, and the 408/409 the vendors' SDKs retry."""
    return status in (408, 409, 429) or status >= 500


def _error_message(body: bytes) -> str:
    """The human part of an upstream error body, whatever dialect it is in."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, str):
            return err
        if isinstance(err, dict):
            # OpenAI {"error": {"message"}}, Anthropic {"error": {"type", "message"}},
            # vLLM {"object": "error", "message"}, FastAPI {"detail"}.
            for key in ("message", "detail", "msg"):
                if isinstance(err.get(key), str):
                    kind = err.get("type")
                    prefix = f"{kind}: " if isinstance(kind, str) and kind else ""
                    return prefix + err[key]
    return body.decode("utf-8", "replace").strip()


def status_error(
    name: str,
    status: int,
    body: bytes,
    secrets: Iterable[Secret],
    headers: Mapping[str, str] | None = None,
) -> ProviderError:
    """The ProviderError for an upstream HTTP error response.

    OpenAI and Anthropic may override the status-based classification with an
    ``x-should-retry: true|false`` header; it is honoured like their SDKs do.
    """
    message = redact(_error_message(body), secrets) or httpx.codes.get_reason_phrase(status)
    if len(message) > _MAX_ERROR_TEXT:
        message = message[:_MAX_ERROR_TEXT] + "..."
    should_retry = (headers or {}).get("x-should-retry", "").lower()
    if should_retry in ("true", "false"):
        transient = should_retry == "true"
    else:
        transient = is_transient_status(status)
    log.debug("%s: upstream answered HTTP %d (transient=%s)", name, status, transient)
    return ProviderError(f"{name}: HTTP {status}: {message}", transient=transient, status=status)


def transport_error(name: str, exc: httpx.RequestError) -> ProviderError:
    """The ProviderError for a timeout or a network failure (always transient).

    Built from the exception's type and the URL it was sending to (without user
    info or query, where a credential could be): httpx messages are not ours to
    vet. The URL tells a misconfigured base URL from an upstream that is down.
    """
    if isinstance(exc, httpx.TimeoutException):
        what = {
            httpx.ConnectTimeout: "connecting timed out",
            httpx.ReadTimeout: "timed out waiting for data",
            httpx.WriteTimeout: "timed out sending the request",
            httpx.PoolTimeout: "timed out waiting for a free connection",
        }.get(type(exc), "timed out")
    elif isinstance(exc, httpx.ConnectError):
        what = "could not connect"
    elif isinstance(exc, httpx.RemoteProtocolError):
        what = "connection closed unexpectedly"
    else:
        what = f"network error ({type(exc).__name__})"
    with contextlib.suppress(RuntimeError):  # RuntimeError: raised without a request
        what += f" ({display_url(str(exc.request.url))})"
    log.debug("%s: upstream %s", name, what)
    return ProviderError(f"{name}: upstream {what}", transient=True, status=None)


def stream_ended_early(name: str) -> ProviderError:
    return ProviderError(
        f"{name}: upstream stream ended before the response was complete", transient=True
    )


def malformed(name: str, what: str) -> ProviderError:
    return ProviderError(f"{name}: malformed upstream stream ({what})", transient=True)


def json_event(name: str, data: str) -> dict[str, Any]:
    """A typed stream event's JSON object (Anthropic's, OpenAI Responses'); else malformed."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise malformed(name, "an event is not JSON") from None
    if not isinstance(event, dict):
        raise malformed(name, "an event is not an object")
    return event


def token_count(value: Any) -> int:
    """A usage count as the upstream gave it (0 when it is missing or not an integer)."""
    return value if isinstance(value, int) else 0


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[SSEEvent]:
    """Server-sent events from a line iterator (the WHATWG parsing rules, minus ids/retry)."""
    event = ""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
    if data:  # a last event without its blank line
        yield SSEEvent(event or "message", "\n".join(data))


class SSEDecoder:
    """Server-sent events from raw body bytes, as :func:`iter_sse` reads them from lines.

    Why: the streaming hot path. Fed whatever a network read brought, it returns
    every event completed by it, without a text decoder, a line iterator and an
    async generator step per line in between.
    """

    __slots__ = ("_buf", "_cr", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._cr = False
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if self._cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the \n of a \r\n split across reads
        self._cr = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[SSEEvent] = []
        for raw in lines:
            self._line(raw, out)
        return out

    def _line(self, raw: bytes, out: list[SSEEvent]) -> None:
        if not raw:
            if self._data:
                out.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if raw[:1] == b":":
            return  # comment / keep-alive
        field, _, value = raw.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")

    def close(self) -> list[SSEEvent]:
        """The events still held once the body has ended (a last one without its blank line)."""
        out: list[SSEEvent] = []
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""
        self._line(b"", out)
        return out


def json_body(body: Mapping[str, Any]) -> bytes:
    return orjson.dumps(body)


def dedupe(names: Iterable[str]) -> list[str]:
    """Names in first-seen order, blanks dropped."""
    out: list[str] = []
    for name in names:
        name = name.strip()
        if name and name not in out:
            out.append(name)
    return out


def default_client(timeout: httpx.Timeout) -> tuple[httpx.AsyncClient, LeanTransport | None]:
    """The providers' own client: many runs stream at once and keep their connections.

    It uses :class:`LeanTransport` (a constant-time keep-alive pool, returned
    too), unless the environment names a proxy: httpx's own pool honours
    those, ours does not.
    """
    if any(k in ("http", "https", "all") for k in urllib.request.getproxies()):
        client = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
        )
        return client, None
    lean = LeanTransport(max_idle=200)
    return httpx.AsyncClient(timeout=timeout, transport=lean), lean


class HTTPProvider:
    """Common state of the HTTP providers: name, URL, key, model list, httpx client.

    The client is created here (and closed by :meth:`aclose`) unless one is
    passed in, in which case its owner closes it.
    """

    #: Used when no base_url is given.
    default_base_url = ""

    def __init__(
        self,
        *,
        name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        models: Iterable[str] = (),
        timeout: float | httpx.Timeout | None = None,
        headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not name or "/" in name or name != name.strip():
            raise ValueError(f"invalid provider name {name!r}: non-empty, no '/', no spaces")
        self.name = name
        self._base_url = check_base_url(base_url or self.default_base_url)
        if api_key:
            check_credential("api_key", api_key)
        self._api_key = Secret(api_key) if api_key else None
        self._models = dedupe(models)
        #: A configured list is what the provider serves; without one it is asked.
        self._explicit_models = bool(self._models)
        headers = {str(k): str(v) for k, v in (headers or {}).items()}
        for header, value in headers.items():
            check_credential(f"the value of header {header!r}", value)
        self._secrets = secret_values(self._api_key, headers)
        # Header values may be credentials too (Azure's api-key...): held as Secrets.
        self._extra_headers = {k: Secret(v) for k, v in headers.items()}
        self._extra_body = dict(extra_body or {})
        self._owns_client = client is None
        self._lean: LeanTransport | None = None
        if client is None:
            client, self._lean = default_client(make_timeout(timeout))
        self._client = client
        self._timeouts = client.timeout.as_dict()
        #: Parsed request URLs: a provider calls a handful of fixed endpoints, and
        #: httpx parses a URL string in pure Python on every request otherwise.
        self._urls: dict[str, httpx.URL] = {}

    @property
    def secrets(self) -> tuple[Secret, ...]:
        """The key and the credential-like header values this provider sends."""
        return self._secrets

    @property
    def base_url(self) -> str:
        """The upstream root, as configured (without a trailing slash)."""
        return self._base_url

    def models(self) -> list[str]:
        return list(self._models)

    @property
    def discovers_models(self) -> bool:
        """Whether its model list comes from the upstream (none was configured)."""
        return not self._explicit_models

    def _auth_headers(self) -> dict[str, str]:  # pragma: no cover - overridden
        return {}

    def _headers(self, accept: str = "application/json") -> dict[str, str]:
        return {
            "accept": accept,
            "content-type": "application/json",
            "user-agent": "tether",
            **{k: v.get() for k, v in self._extra_headers.items()},
            **self._auth_headers(),
        }

    def _url(self, url: str) -> httpx.URL:
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        return parsed

    def _request(self, url: str, content: bytes, headers: dict[str, str]) -> httpx.Request:
        return httpx.Request(
            "POST", self._url(url), headers=headers, content=content,
            extensions={"timeout": self._timeouts},
        )  # fmt: skip

    def _send_now(self, url: str, content: bytes, headers: dict[str, str]) -> Sent | None:
        """POST now, without awaiting, if our transport has an idle connection to ``url``."""
        if self._lean is None:
            return None
        sent = self._lean.send_now(
            self._url(url), headers, content, lambda: self._request(url, content, headers)
        )
        if sent is not None:
            metrics.upstream_request_written(self.name)
        return sent

    @contextlib.asynccontextmanager
    async def _post_stream(
        self, url: str, content: bytes, headers: dict[str, str], sent: Sent | None = None
    ) -> AsyncIterator[httpx.Response]:
        """POST ``content`` (or read the answer to ``sent``) and stream the response.

        On our own transport the request goes to it directly: httpx's client
        wraps every request in auth, redirect and cookie handling that a
        provider's call never uses, and that was a fifth of the time before a
        completion's upstream request was written. Errors are httpx's, as ever.
        Each request is counted by its status (metrics), once its head is read.
        """
        if self._lean is None:
            metrics.upstream_request_written(self.name)
            async with self._answered(
                self._client.stream("POST", url, content=content, headers=headers)
            ) as resp:
                yield resp
            return
        if sent is not None:
            request = sent.request
            resp = await self._answer(self._lean.response_to(sent))
        else:
            request = self._request(url, content, headers)
            metrics.upstream_request_written(self.name)
            resp = await self._answer(self._lean.handle_async_request(request))
        resp.request = request
        try:
            yield resp
        finally:
            await resp.aclose()

    async def _get_model_ids(self, url: str) -> list[str]:
        """GET a models list (``{"data": [{"id": ...}]}``, OpenAI's and Anthropic's shape).

        Follows Anthropic's pages (``has_more`` with ``last_id``, asked for
        again as ``after_id``); OpenAI-compatible upstreams answer in one page.
        """
        ids: list[str] = []
        after: str | None = None
        for _ in range(_MAX_MODEL_PAGES):
            page = await self._get_json(url, {"after_id": after} if after else None)
            try:
                ids += [str(entry["id"]) for entry in page["data"]]
            except (KeyError, TypeError):
                raise self._unexpected_models() from None
            last = page.get("last_id")
            if page.get("has_more") is not True or not isinstance(last, str) or last == after:
                break
            after = last
        return dedupe(ids)

    async def _answer(self, response: Awaitable[httpx.Response]) -> httpx.Response:
        """``response``, counted by its status (or as an error if none comes)."""
        try:
            resp = await response
        except httpx.RequestError:
            metrics.upstream_answered(self.name, None)
            raise
        metrics.upstream_answered(self.name, resp.status_code)
        return resp

    @contextlib.asynccontextmanager
    async def _answered(
        self, stream: contextlib.AbstractAsyncContextManager[httpx.Response]
    ) -> AsyncIterator[httpx.Response]:
        """Like :meth:`_answer`, for httpx's streamed response."""
        async with contextlib.AsyncExitStack() as stack:
            resp = await self._answer(stack.enter_async_context(stream))
            yield resp

    async def _get_json(self, url: str, params: dict[str, str] | None) -> dict[str, Any]:
        try:
            resp = await self._answer(self._client.get(url, params=params, headers=self._headers()))
        except httpx.RequestError as exc:
            raise transport_error(self.name, exc) from None
        if resp.status_code >= 400:
            raise status_error(
                self.name, resp.status_code, resp.content, self._secrets, resp.headers
            )
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise self._unexpected_models() from None
        if not isinstance(data, dict):
            raise self._unexpected_models()
        return data

    def _unexpected_models(self) -> ProviderError:
        return ProviderError(f"{self.name}: unexpected models list from upstream", transient=False)

    async def refresh_models(self) -> list[str]:
        """Replace the model list with the upstream's own list, and return it."""
        self._models = await self._fetch_models()
        return list(self._models)

    async def _fetch_models(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return (
            f"{type(self).__name__}(name={self.name!r}, base_url={display_url(self._base_url)!r}, "
            f"models={self._models!r}, api_key={key})"
        )

    __str__ = __repr__

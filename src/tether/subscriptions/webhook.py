"""One webhook delivery: a signed POST to a checked address, and what came of it.

The sender signs the exact bytes it sends (PROTOCOL.md 7.1), resolves the host
itself and connects only to addresses the URL policy admits (the TLS handshake
still names and verifies the host), follows no redirect (a redirect could point
anywhere inside), bounds the whole exchange by one timeout and reads at most a
small answer. Network failures are outcomes, not exceptions: the caller decides
about retries (:func:`retry_delay`) and records the reason, which carries no URL,
token or key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from tether.subscriptions.signing import Keyring
from tether.subscriptions.url_policy import WebhookTarget, WebhookUrlRejected, resolve_webhook_url

log = logging.getLogger(__name__)
#: True while this task delivers a webhook: httpx's request line, which shows the
#: whole URL (its path or query may be the receiver's secret), is then not logged.
_delivering: ContextVar[bool] = ContextVar("webhook_delivering", default=False)


class _QuietWhileDelivering(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _delivering.get()


_QUIET = _QuietWhileDelivering()

#: Hosts whose connections are kept between deliveries (the least recently used go).
MAX_HOSTS = 64
#: Most bytes of a receiver's answer read (``{"done": true}`` is 14).
MAX_ANSWER_BYTES = 64 * 1024
#: Retry delays: the first, the cap, and the jitter (PROTOCOL.md 7.1).
FIRST_RETRY = 1.0
MAX_RETRY = 60.0
JITTER = 0.2


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    ok: bool  # 2xx answer
    done: bool  # the 2xx body was {"done": true}
    status: int | None  # HTTP status, None when no answer (connect error, timeout)
    reason: str  # short, for logs and the subscription's status; no secrets


def _failed(reason: str, status: int | None = None) -> DeliveryOutcome:
    return DeliveryOutcome(ok=False, done=False, status=status, reason=reason)


class _HostPools:
    """One connection pool per webhook host, so connections are kept between deliveries
    and yet one verified for a host never carries a request for another host at the
    same address (a pool knows its connections by address only). The least recently
    used idle pools are closed past :data:`MAX_HOSTS`."""

    def __init__(self, make: Callable[[], httpx.AsyncClient]) -> None:
        self._make = make
        self._pools: OrderedDict[tuple[str, str, int], httpx.AsyncClient] = OrderedDict()
        self._busy: Counter[httpx.AsyncClient] = Counter()

    @contextlib.asynccontextmanager
    async def client(self, target: WebhookTarget) -> AsyncIterator[httpx.AsyncClient]:
        key = (target.scheme, target.host, target.port)
        client = self._pools.pop(key, None) or self._make()
        self._pools[key] = client  # the most recently used last
        self._busy[client] += 1
        try:
            yield client
        finally:
            self._busy[client] -= 1
            if not self._busy[client]:
                del self._busy[client]
            await self._close_idle()

    async def _close_idle(self) -> None:
        while len(self._pools) > MAX_HOSTS:
            key = next((k for k, c in self._pools.items() if c not in self._busy), None)
            if key is None:  # all in use: closed once they are not
                return
            await self._pools.pop(key).aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for client in pools:
            await client.aclose()


class WebhookSender:
    """Delivers signed webhook requests; one per server, sharing its connections."""

    def __init__(
        self,
        keyring: Keyring,
        *,
        allow_loopback: bool,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """``verify``: the TLS trust (default: the system's CAs); a context to trust a
        private CA."""
        self._keyring = keyring
        self._allow_loopback = allow_loopback
        self._timeout = timeout
        self._pools = _HostPools(
            lambda: httpx.AsyncClient(
                follow_redirects=False, timeout=timeout, trust_env=False, verify=verify
            )
        )
        logging.getLogger("httpx").addFilter(_QUIET)  # once: a logger keeps a filter once

    async def deliver(self, url: str, payload: dict[str, Any]) -> DeliveryOutcome:
        """POST the payload (JSON bytes signed as sent) with Webhook-Signature; never raises
        for network errors (they are an outcome); redirects are not followed."""
        quiet = _delivering.set(True)
        try:
            async with asyncio.timeout(self._timeout):
                outcome = await self._deliver(url, orjson.dumps(payload))
        except TimeoutError:
            outcome = _failed(f"no answer within {self._timeout:g} s")
        finally:
            _delivering.reset(quiet)
        log.debug("webhook delivery: %s", outcome.reason)
        return outcome

    async def _deliver(self, url: str, body: bytes) -> DeliveryOutcome:
        try:
            target, addresses = await resolve_webhook_url(url, allow_loopback=self._allow_loopback)
        except WebhookUrlRejected as err:
            return _failed(str(err))
        except OSError:
            return _failed("the webhook host name does not resolve")
        original = httpx.URL(url)
        headers = {
            "Host": _host_header(target),
            "Content-Type": "application/json",
            "Webhook-Signature": self._keyring.signature_header(body),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        async with self._pools.client(target) as client:
            return await self._post(client, original, addresses, body, headers, extensions)

    async def _post(
        self,
        client: httpx.AsyncClient,
        url: httpx.URL,
        addresses: list[str],
        body: bytes,
        headers: dict[str, str],
        extensions: dict[str, str],
    ) -> DeliveryOutcome:
        reason = "could not connect"
        for address in addresses:  # the checked addresses, in the resolver's order
            request = client.build_request(
                "POST", url.copy_with(host=address), content=body, headers=headers,
                extensions=extensions,
            )  # fmt: skip
            try:
                return await self._read(client, request)
            except httpx.ConnectError as err:
                reason = "TLS handshake failed" if _tls_failure(err) else "could not connect"
                continue
            except httpx.TimeoutException:
                return _failed(f"no answer within {self._timeout:g} s")
            except httpx.HTTPError as err:
                reason = f"request failed ({type(err).__name__})"
                break
        return _failed(reason)

    async def _read(self, client: httpx.AsyncClient, request: httpx.Request) -> DeliveryOutcome:
        response = await client.send(request, stream=True)
        try:
            status = response.status_code
            if not 200 <= status < 300:
                why = " (redirects are not followed)" if response.is_redirect else ""
                return _failed(f"HTTP {status}{why}", status)
            answer = bytearray()
            async for chunk in response.aiter_bytes():
                answer += chunk
                if len(answer) > MAX_ANSWER_BYTES:
                    break
            done = _says_done(bytes(answer))
            return DeliveryOutcome(ok=True, done=done, status=status, reason=f"HTTP {status}")
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._pools.aclose()


def _tls_failure(err: BaseException) -> bool:
    """Whether an SSL error (an untrusted or wrong certificate) lies under ``err``."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _host_header(target: WebhookTarget) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _says_done(answer: bytes) -> bool:
    """True for a JSON object answer whose ``done`` is true; anything else is not done."""
    try:
        value = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, dict) and value.get("done") is True


def retry_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt`` (1-based): 1 s doubling to 60 s, +-20% jitter."""
    if attempt < 1:
        raise ValueError("retry attempts count from 1")
    base = min(MAX_RETRY, FIRST_RETRY * 2.0 ** min(attempt - 1, 32))
    return base * (rng or random).uniform(1.0 - JITTER, 1.0 + JITTER)

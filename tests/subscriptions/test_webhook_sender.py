"""Webhook delivery against a real HTTP receiver on loopback: signed bytes as sent,
the receiver's answer read, every failure an outcome, no redirect followed, no secret
in the logs or the reasons; and the retry schedule."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tether.store.sqlite import SqliteStore
from tether.subscriptions import webhook
from tether.subscriptions.signing import NAMESPACE, Keyring
from tether.subscriptions.webhook import DeliveryOutcome, WebhookSender, retry_delay

from .receiver import verify

TOKEN = "cbt_9f2c1e7d4b3a4c21a7e0d5f6b8c9d0e1"
PAYLOAD = {
    "subscription_id": "sub-1",
    "wake_id": "w_1",
    "generation": 7,
    "streams": [{"path": "events/é", "has_pending": True}],
    "callback_token": TOKEN,
}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    #: The sender's end of the connection (host, port): the same for a kept connection.
    peer: tuple[str, int]


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records what it gets."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {name.lower(): value for name, value in request.headers.items()}
        assert request.transport is not None
        peer = request.transport.get_extra_info("peername")[:2]
        self.received.append(Received(request.path, headers, await request.read(), peer))
        if request.path == "/done":
            return web.json_response({"done": True})
        if request.path == "/not-done":
            return web.json_response({"done": "yes"})
        if request.path == "/plain":
            return web.Response(text="thanks")
        if request.path == "/fail":
            return web.json_response({"error": "boom"}, status=503)
        if request.path == "/redirect":
            raise web.HTTPFound("/done")
        if request.path == "/slow":
            await self.release.wait()
        return web.json_response({})


@contextlib.asynccontextmanager
async def serving(tls: ssl.SSLContext | None = None) -> AsyncIterator[Receiver]:
    state = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app, access_log=None)  # the receiver's log is not ours
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    state.port = runner.addresses[0][1]
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving() as state:
        yield state


def certificate_for(name: str, directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``name``: the receiver's TLS, and a trust that
    knows only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    trust = ssl.create_default_context(cafile=str(cert_file))
    return server, trust


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "tether.db")
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
async def keyring(store: SqliteStore) -> Keyring:
    return await Keyring.load(store)


@pytest.fixture
async def sender(keyring: Keyring) -> AsyncIterator[WebhookSender]:
    sender = WebhookSender(keyring, allow_loopback=True, timeout=5.0)
    try:
        yield sender
    finally:
        await sender.aclose()


async def test_the_delivery_is_signed_over_the_bytes_sent(
    receiver: Receiver, sender: WebhookSender, keyring: Keyring
) -> None:
    outcome = await sender.deliver(receiver.url("/hook"), PAYLOAD)
    assert outcome == DeliveryOutcome(ok=True, done=False, status=200, reason="HTTP 200")
    (got,) = receiver.received
    assert got.headers["content-type"] == "application/json"
    assert orjson.loads(got.body) == PAYLOAD
    assert verify(got.body, got.headers["webhook-signature"], keyring.jwks())
    assert got.headers["host"] == f"127.0.0.1:{receiver.port}"


async def test_done_is_read_from_the_answer(receiver: Receiver, sender: WebhookSender) -> None:
    done = await sender.deliver(receiver.url("/done"), PAYLOAD)
    assert (done.ok, done.done, done.status) == (True, True, 200)
    for path in ("/not-done", "/plain", "/hook"):
        outcome = await sender.deliver(receiver.url(path), PAYLOAD)
        assert (outcome.ok, outcome.done) == (True, False), path


async def test_a_non_2xx_answer_is_a_failed_outcome(
    receiver: Receiver, sender: WebhookSender
) -> None:
    outcome = await sender.deliver(receiver.url("/fail"), PAYLOAD)
    assert outcome == DeliveryOutcome(ok=False, done=False, status=503, reason="HTTP 503")


async def test_a_redirect_is_not_followed(receiver: Receiver, sender: WebhookSender) -> None:
    outcome = await sender.deliver(receiver.url("/redirect"), PAYLOAD)
    assert (outcome.ok, outcome.status) == (False, 302)
    assert "redirect" in outcome.reason
    assert [r.path for r in receiver.received] == ["/redirect"]


async def test_a_receiver_that_does_not_answer_in_time_is_a_timeout(
    receiver: Receiver, keyring: Keyring
) -> None:
    sender = WebhookSender(keyring, allow_loopback=True, timeout=0.5)
    try:
        outcome = await sender.deliver(receiver.url("/slow"), PAYLOAD)
    finally:
        await sender.aclose()
    assert (outcome.ok, outcome.done, outcome.status) == (False, False, None)
    assert "0.5 s" in outcome.reason


async def test_a_refused_connection_is_an_outcome(sender: WebhookSender) -> None:
    with socket.socket() as sock:  # a port nobody listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = await sender.deliver(f"http://127.0.0.1:{port}/hook", PAYLOAD)
    assert outcome == DeliveryOutcome(ok=False, done=False, status=None, reason="could not connect")


async def test_a_name_is_resolved_checked_and_named_in_the_host_header(
    receiver: Receiver, sender: WebhookSender, keyring: Keyring
) -> None:
    """localhost may resolve to ::1 first, where nobody listens: the next address is tried."""
    outcome = await sender.deliver(receiver.url("/done", host="localhost"), PAYLOAD)
    assert outcome.done
    (got,) = receiver.received
    assert got.headers["host"] == f"localhost:{receiver.port}"


async def test_a_loopback_receiver_is_refused_unless_allowed(
    receiver: Receiver, keyring: Keyring
) -> None:
    sender = WebhookSender(keyring, allow_loopback=False)
    try:
        for url in (receiver.url("/hook"), f"https://localhost:{receiver.port}/hook"):
            outcome = await sender.deliver(url, PAYLOAD)
            assert (outcome.ok, outcome.status) == (False, None)
    finally:
        await sender.aclose()
    assert receiver.received == []


async def test_no_token_or_private_key_in_logs_or_reasons(
    receiver: Receiver,
    sender: WebhookSender,
    keyring: Keyring,
    store: SqliteStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    outcomes = [
        await sender.deliver(receiver.url(path) + f"?token={TOKEN}", PAYLOAD)
        for path in ("/done", "/fail", "/redirect")
    ]
    record = await store.get_record(NAMESPACE, keyring.active_kid)
    private = orjson.loads(record or b"{}")["d"]
    seen = caplog.text + " ".join(o.reason for o in outcomes)
    assert "webhook delivery" in caplog.text  # the sender did log at debug
    assert TOKEN not in seen
    assert private not in seen


async def test_https_is_verified_against_the_host_named_in_the_url(
    keyring: Keyring, tmp_path: Path
) -> None:
    """The request goes to the checked address, but TLS still names and verifies the
    host; a connection verified for one host never carries another's request."""
    server_tls, trust = certificate_for("localhost", tmp_path)
    async with serving(server_tls) as receiver:
        sender = WebhookSender(keyring, allow_loopback=True, verify=trust)
        try:
            named = await sender.deliver(f"https://localhost:{receiver.port}/done", PAYLOAD)
            by_address = await sender.deliver(f"https://127.0.0.1:{receiver.port}/done", PAYLOAD)
        finally:
            await sender.aclose()
    assert (named.ok, named.done) == (True, True)
    (got,) = receiver.received  # the certificate does not name 127.0.0.1
    assert verify(got.body, got.headers["webhook-signature"], keyring.jwks())
    assert got.headers["host"] == f"localhost:{receiver.port}"
    assert by_address == DeliveryOutcome(False, False, None, "TLS handshake failed")


async def test_a_hosts_connection_is_kept_and_only_for_that_host(
    receiver: Receiver, keyring: Keyring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_tls, trust = certificate_for("localhost", tmp_path)
    monkeypatch.setattr(webhook, "MAX_HOSTS", 1)  # one host's connections kept at a time
    async with serving(server_tls) as tls_receiver:
        sender = WebhookSender(keyring, allow_loopback=True, verify=trust)
        named = f"https://localhost:{tls_receiver.port}/done"
        try:
            outcomes = [await sender.deliver(named, PAYLOAD) for _ in range(3)]
            other = await sender.deliver(receiver.url("/done"), PAYLOAD)  # another host
            again = await sender.deliver(named, PAYLOAD)
        finally:
            await sender.aclose()
    assert all(o.done for o in outcomes) and other.done and again.done
    peers = [r.peer for r in tls_receiver.received]
    assert len(peers) == 4
    assert peers[0] == peers[1] == peers[2]  # kept between deliveries
    assert peers[3] != peers[0]  # the other host's pool pushed this one out, and closed it


async def test_an_untrusted_certificate_is_a_failed_outcome(
    keyring: Keyring, tmp_path: Path
) -> None:
    server_tls, _ = certificate_for("localhost", tmp_path)
    async with serving(server_tls) as receiver:
        sender = WebhookSender(keyring, allow_loopback=True)  # the system's CAs only
        try:
            outcome = await sender.deliver(f"https://localhost:{receiver.port}/done", PAYLOAD)
        finally:
            await sender.aclose()
    assert outcome == DeliveryOutcome(False, False, None, "TLS handshake failed")
    assert receiver.received == []


def test_retry_delays_double_from_one_second_to_a_minute_with_jitter() -> None:
    rng = random.Random(22)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (40, 60.0)]:
        delays = [retry_delay(attempt, rng) for _ in range(200)]
        assert all(0.8 * base <= d <= 1.2 * base for d in delays), attempt
        assert max(delays) - min(delays) > 0.2 * base  # jittered, not fixed
    with pytest.raises(ValueError):
        retry_delay(0)

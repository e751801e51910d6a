"""Which webhook URLs the server will call (SSRF prevention, PROTOCOL.md 6.2 and 12.8).

A webhook URL is checked twice. When a subscription is made (:func:`check_webhook_url`):
``https`` only, no user info, and a literal address must be a public one. When a
delivery is made (:func:`resolve_webhook_url`): every address the host name resolves
to must be public too, and the delivery connects to one of those checked addresses,
so a name that resolves to a private address (or that changes its answer between the
check and the connection: DNS rebinding) reaches nothing inside.

For development, ``allow_loopback`` admits ``http://localhost`` and
``http://127.0.0.x`` (the protocol's exception), and nothing else local.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Longest webhook URL accepted (a bound on what a subscription stores and sends).
MAX_URL_LENGTH = 2048
_LOOPBACK_NAMES = ("localhost",)
#: Letters, digits, hyphens, underscores, in dot-separated labels (lower case by now).
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
#: The protocol's development exception: http://127.0.0.x.
_DEV_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/24")
#: NAT64's well-known prefix: its addresses reach the IPv4 address in their last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class WebhookUrlRejected(ValueError):
    """The webhook URL is not one the server calls; the message says why (never the URL)."""


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A checked webhook URL, split as a delivery needs it."""

    scheme: str
    host: str
    port: int
    #: The host as an address, when the URL names one instead of a host name.
    address: IPAddress | None


def _loopback_name(host: str) -> bool:
    return host in _LOOPBACK_NAMES or host.endswith(".localhost")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches (mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress, *, loopback_ok: bool) -> str | None:
    """Why the server must not connect to ``address``, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            return address_refusal(inner, loopback_ok=loopback_ok)
    if address.is_loopback:
        return None if loopback_ok else "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_private:
        return "a private network address"
    if not address.is_global:
        return "not a public address"
    return None


def parse_webhook_url(url: str, *, allow_loopback: bool) -> WebhookTarget:
    """The checks that need no DNS; WebhookUrlRejected says which one failed."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlRejected(f"webhook URL longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise WebhookUrlRejected(
            "webhook URL must be printable ASCII, without spaces (an international "
            "host name in its xn-- form, other characters percent-encoded)"
        )
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except ValueError:
        raise WebhookUrlRejected("webhook URL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise WebhookUrlRejected("webhook URL must use https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise WebhookUrlRejected("webhook URL must not contain user info")
    if not host:
        raise WebhookUrlRejected("webhook URL has no host")
    address = _literal_address(host)
    if address is None and not _HOST_NAME.fullmatch(host):
        raise WebhookUrlRejected("webhook host is not a valid host name")
    default_port = 443 if scheme == "https" else 80
    _check_same_reading(url, host, port or default_port)
    dev_loopback = _loopback_name(host) or (
        isinstance(address, ipaddress.IPv4Address) and address in _DEV_LOOPBACK
    )
    if scheme == "http" and not (allow_loopback and dev_loopback):
        raise WebhookUrlRejected(
            "webhook URL must use https (http only for localhost or 127.0.0.x, "
            "when loopback webhooks are allowed for development)"
        )
    if _loopback_name(host) and not allow_loopback:
        raise WebhookUrlRejected(f"webhook host {host} is loopback")
    if address is not None:
        why = address_refusal(address, loopback_ok=allow_loopback and dev_loopback)
        if why is not None:
            raise WebhookUrlRejected(f"webhook host {host} is {why}")
    return WebhookTarget(scheme, host, port or default_port, address)


def _check_same_reading(url: str, host: str, port: int) -> None:
    """The HTTP client must read the URL's host and port as this check did: two
    parsers that disagree are how a checked URL reaches an unchecked host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise WebhookUrlRejected("webhook URL is not a valid URL") from None
    read_host = parsed.raw_host.decode("ascii", "replace").lower().rstrip(".")
    if read_host != host or (parsed.port or port) != port:
        raise WebhookUrlRejected("webhook URL is ambiguous (its host reads two ways)")


def _literal_address(host: str) -> IPAddress | None:
    """``host`` as an address, if it is one; WebhookUrlRejected for a numeric host
    that is no canonical address (``127.1``, ``0x7f.0.0.1``, ``2130706433``): resolvers
    read those as addresses too, so they cannot pass for names."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    last = host.rsplit(".", 1)[-1]
    if last.isdigit() or last.startswith("0x"):
        raise WebhookUrlRejected(f"webhook host {host} is not a canonical IP address")
    return None


def check_webhook_url(url: str, *, allow_loopback: bool) -> None:
    """https only (http allowed only for localhost / 127.0.0.x when allow_loopback);
    literal private, link-local, loopback (unless allowed), metadata (169.254.169.254),
    multicast, unspecified addresses refused; user info refused."""
    parse_webhook_url(url, allow_loopback=allow_loopback)


async def resolve_webhook_url(url: str, *, allow_loopback: bool) -> tuple[WebhookTarget, list[str]]:
    """The checked target and the addresses a delivery may connect to, all of them
    checked. WebhookUrlRejected if any address the name resolves to is refused;
    ``socket.gaierror`` (an OSError) if the name does not resolve."""
    target = parse_webhook_url(url, allow_loopback=allow_loopback)
    if target.address is not None:
        return target, [str(target.address)]
    infos = await asyncio.get_running_loop().getaddrinfo(
        target.host, target.port, type=socket.SOCK_STREAM
    )
    loopback_ok = allow_loopback and _loopback_name(target.host)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        why = address_refusal(address, loopback_ok=loopback_ok)
        if why is not None:
            raise WebhookUrlRejected(f"webhook host {target.host} resolves to {why}")
        if str(address) not in addresses:
            addresses.append(str(address))
    return target, addresses


async def check_resolved(url: str, *, allow_loopback: bool) -> None:
    """At delivery time: the host's resolved addresses pass the same rules (DNS rebinding)."""
    await resolve_webhook_url(url, allow_loopback=allow_loopback)

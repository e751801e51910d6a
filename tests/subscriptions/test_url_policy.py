"""Webhook URLs the server refuses to call (SSRF): https to public hosts only, with
http://localhost and http://127.0.0.x admitted only when loopback is allowed."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from tether.subscriptions.url_policy import (
    WebhookUrlRejected,
    check_resolved,
    check_webhook_url,
)

PUBLIC = [
    "https://hooks.example.com/durable",
    "https://xn--bcher-kva.example/hook",
    "https://Hooks.Example.COM./a%20b#frag",
    "https://hooks.example.com:8443/a/b?x=1",
    "https://93.184.215.14/hook",
    "https://[2606:4700::6810:84e5]/hook",
]

REFUSED_ALWAYS = [
    "https://10.0.0.1/hook",
    "https://172.16.0.1/hook",
    "https://172.31.255.254/hook",
    "https://192.168.1.10/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/hook",
    "https://[fd00::1]/hook",
    "https://[fe80::1]/hook",
    "https://0.0.0.0/hook",
    "https://[::]/hook",
    "https://224.0.0.1/hook",
    "https://[ff02::1]/hook",
    "https://255.255.255.255/hook",
    "https://100.64.0.1/hook",  # carrier-grade NAT
    "https://[::ffff:10.0.0.1]/hook",  # IPv4-mapped
    "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
    "https://127.1/hook",  # resolvers read these as 127.0.0.1
    "https://2130706433/hook",
    "https://0x7f.0.0.1/hook",
    "https://user:pass@hooks.example.com/hook",
    "https://token@hooks.example.com/hook",
    "ftp://hooks.example.com/hook",
    "file:///etc/passwd",
    "hooks.example.com/hook",
    "https:///hook",
    "https://hooks.example.com:99999/hook",
    "https://hooks.example.com/a b",
    "http://10.0.0.1/hook",
    "http://127.0.1.1/hook",  # loopback, but outside the 127.0.0.x exception
    "http://[::1]/hook",
    "http://hooks.example.com/hook",
    "https://hooks.example.com/" + "a" * 2048,
    "https://hooks.example.com\\.10.0.0.1/hook",  # a backslash, read two ways
    "https://bücher.example/hook",  # use its xn-- form
    "https://hooks.example.com/\x00",
    "https://-bad-.example.com/hook",
    "https://hooks.example.com:+443/hook",  # a port only one of two parsers reads
]


@pytest.mark.parametrize("url", PUBLIC)
def test_https_to_a_public_host_is_accepted(url: str) -> None:
    check_webhook_url(url, allow_loopback=False)
    check_webhook_url(url, allow_loopback=True)


@pytest.mark.parametrize("url", REFUSED_ALWAYS)
def test_unsafe_urls_are_refused_even_with_loopback_allowed(url: str) -> None:
    for allow_loopback in (False, True):
        with pytest.raises(WebhookUrlRejected):
            check_webhook_url(url, allow_loopback=allow_loopback)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/hook",
        "http://localhost:8080/hook",
        "http://LOCALHOST./hook",
        "http://127.0.0.1:9000/hook",
        "http://127.0.0.42/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
    ],
)
def test_loopback_is_admitted_only_when_allowed_for_development(url: str) -> None:
    check_webhook_url(url, allow_loopback=True)
    with pytest.raises(WebhookUrlRejected):
        check_webhook_url(url, allow_loopback=False)


def test_the_reason_names_the_rule_and_not_the_url() -> None:
    with pytest.raises(WebhookUrlRejected) as caught:
        check_webhook_url("https://user:s3cret-pw@hooks.example.com/hook", allow_loopback=True)
    assert "user info" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(WebhookUrlRejected) as caught:
        check_webhook_url("https://169.254.169.254/?token=abc123", allow_loopback=False)
    assert "link-local" in str(caught.value)
    assert "abc123" not in str(caught.value)
    with pytest.raises(WebhookUrlRejected) as caught:
        check_webhook_url("http://hooks.example.com/hook", allow_loopback=False)
    assert "https" in str(caught.value)


async def test_a_name_that_resolves_to_loopback_is_refused_at_delivery() -> None:
    """``localhost`` stands for any name an attacker points at an inside address."""
    with pytest.raises(WebhookUrlRejected) as caught:
        await check_resolved("https://localhost/hook", allow_loopback=False)
    assert "loopback" in str(caught.value)
    await check_resolved("http://localhost/hook", allow_loopback=True)


async def test_a_host_name_that_resolves_inside_passes_creation_but_not_delivery() -> None:
    """This machine's own name: a name like any other, resolving to an inside address."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if any(ipaddress.ip_address(info[4][0].split("%")[0]).is_global for info in infos):
        pytest.skip(f"this machine's name {name!r} resolves to a public address")
    check_webhook_url(f"https://{name}/hook", allow_loopback=False)
    for allow_loopback in (False, True):  # the exception is for localhost, not any name
        with pytest.raises(WebhookUrlRejected) as caught:
            await check_resolved(f"https://{name}/hook", allow_loopback=allow_loopback)
        assert "resolves to" in str(caught.value)


async def test_a_literal_public_address_needs_no_lookup() -> None:
    await check_resolved("https://93.184.215.14/hook", allow_loopback=False)
    with pytest.raises(WebhookUrlRejected):
        await check_resolved("https://10.0.0.1/hook", allow_loopback=True)

"""The redactor: every form of a known secret, and credential fields, become ``***``."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

import pytest

from tether.providers._http import Secret, status_error
from tether.providers.redaction import Redactor, check_credential

KEY = "sk-proj-Qm7x+T2vL/k9RzW4nB8cYh3JdF"
OTHER = "tk-live-0c4e8a2f6b1d9375"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"key {KEY} end", "key *** end"),
        (f"url ?k={quote(KEY, safe='')}&x=1", "url ?k=***&x=1"),
        (f"form k={quote_plus(KEY)}", "form k=***"),
        (f"hex {quote(KEY, safe='').replace('%2B', '%2b').replace('%2F', '%2f')}", "hex ***"),
        ("shown as sk-pr****JdF.", "shown as ***."),
        ("shown as sk-...3JdF", "shown as ***"),
        ("shown as ••••h3JdF", "shown as ***"),
        (f"Basic {b64(KEY)}", "Basic ***"),
        (f"raw {b64url(KEY)}", "raw ***"),
        # user:key puts the key at any alignment of the base64 groups.
        (f"Basic {b64('u:' + KEY)}", "Basic ***"),
        (f"Basic {b64('us:' + KEY)}", "Basic ***"),
        (f"Basic {b64('user:' + KEY)}!", "Basic ***!"),
        (f"x {b64url('apikey:' + KEY + ':x')} y", "x *** y"),
        (f"both {OTHER} and {KEY}", "both *** and ***"),
    ],
)
def test_every_form_of_a_known_secret_is_hidden(line: str, expected: str) -> None:
    assert Redactor([KEY, OTHER], credential_fields=False)(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("< authorization: Bearer whoever", "< authorization: ***"),
        ("X-Api-Key: abc def", "X-Api-Key: ***"),
        ("Set-Cookie: s=1; Path=/", "Set-Cookie: ***"),
        (
            "[(b'host', b'h'), (b'authorization', b'Bearer x'), (b'cookie', b'a=b')]",
            "[(b'host', b'h'), (b'authorization', b'***'), (b'cookie', b'***')]",
        ),
        ("{'x-api-key': 'abc', 'a': 'b'}", "{'x-api-key': '***', 'a': 'b'}"),
        ('{"access_token": "abc", "n": 1}', '{"access_token": "***", "n": 1}'),
        ("GET /ws?offset=-1&token=a.b-c_d HTTP/1.1", "GET /ws?offset=-1&token=*** HTTP/1.1"),
        ("/v1/m?key=AIzaabc&alt=sse", "/v1/m?key=***&alt=sse"),
        ("sent bearer abc.def", "sent bearer ***"),
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        # İ lower-cases to two characters: positions must not shift.
        ("İstanbul AUTHORIZATION: Basic x", "İstanbul AUTHORIZATION: ***"),
    ],
)
def test_credential_fields_are_hidden_whoever_they_belong_to(line: str, expected: str) -> None:
    assert Redactor([])(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        '127.0.0.1:36210 - "GET /v1/sessions/ses_01a2/events?offset=0000_0042 HTTP/1.1" 200',
        "Waiting for application startup.",
        "max_tokens=100 tokens: 5 keys=3",
        "sk-pr****zzzz is someone else's key",
        "loading... done",
        "sec-websocket-accept: Z0b4U9mjXiOx22H19NkfEqunCVE=",
    ],
)
def test_ordinary_text_comes_back_unchanged(line: str) -> None:
    """The very same object, so that a caller can tell nothing was hidden."""
    assert Redactor([KEY, OTHER])(line) is line


def test_a_short_secret_is_hidden_verbatim_only() -> None:
    """Its masked and base64 forms would be a few characters, found in ordinary text."""
    redact = Redactor(["dev1"], credential_fields=False)
    assert redact("key dev1 set") == "key *** set"
    assert redact(f"Basic {b64('dev1')} de...v1") == f"Basic {b64('dev1')} de...v1"


def test_without_credential_fields_other_peoples_fields_are_left_alone() -> None:
    redact = Redactor([KEY], credential_fields=False)
    assert redact("Authorization: Bearer abc") == "Authorization: Bearer abc"
    assert redact(f"Authorization: Bearer {KEY}") == "Authorization: Bearer ***"


def test_an_upstream_error_quoting_the_key_masked_reaches_no_one() -> None:
    """OpenAI's 401 names the key it was sent, masked: that form is a leak too."""
    body = b'{"error": {"message": "Incorrect API key provided: sk-pr*******************3JdF."}}'
    err = status_error("openai", 401, body, [Secret(KEY)])
    assert str(err) == "openai: HTTP 401: Incorrect API key provided: ***."


@pytest.mark.parametrize("value", [f"{KEY}\n", f"{KEY}\r", f"\t{KEY}", "a\x00b", f"{KEY}\x7f"])
def test_a_credential_with_a_control_character_is_refused_by_name(value: str) -> None:
    with pytest.raises(ValueError) as info:
        check_credential("TETHER_OPENAI_API_KEY", value)
    assert str(info.value).startswith("TETHER_OPENAI_API_KEY contains a control character")
    assert value.strip() not in str(info.value)


def test_a_clean_credential_passes() -> None:
    check_credential("TETHER_OPENAI_API_KEY", KEY)

"""The webhooks' pure parts as values: Standard Webhooks signatures checked by the reference
library (``standardwebhooks``) and a forged one refused by it; the retry schedule and what an
answer means; which URLs and addresses a webhook may go to."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from mailer.outbox import policy, signing
from mailer.outbox.policy import Verdict
from mailer.storage.webhooks import new_secret
from mailer.webhook_urls import TargetError, check_url, parse_url, refused_address, shown

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def test_signature_verifies_with_the_reference_library() -> None:
    secret = new_secret()
    payload = {"type": "subscriber.confirmed", "timestamp": "2026-11-25T09:00:00Z",
               "data": {"email": "ana@example.org", "name": "Aña 𝄞"}}  # fmt: skip
    body = signing.body(payload)
    now = datetime.now(UTC)
    headers = signing.headers(secret, "msg_abc", now, body)
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == payload
    assert json.loads(body) == payload
    assert b'","' in body  # compact: no space after the separators
    assert signing.verify(secret, headers, body)
    assert Webhook(secret).sign("msg_abc", now, body.decode()) == headers["webhook-signature"]


@pytest.mark.parametrize("what", ["body", "id", "timestamp", "secret", "signature"])
def test_a_forged_signature_is_refused_by_the_reference_library(what: str) -> None:
    secret = new_secret()
    body = signing.body({"type": "send.finished", "data": {"send": 1}})
    now = datetime.now(UTC)
    headers = signing.headers(secret, "msg_abc", now, body)
    checked_secret = secret
    if what == "body":
        body = body.replace(b"1", b"2")
    elif what == "id":
        headers["webhook-id"] = "msg_abd"
    elif what == "timestamp":
        headers["webhook-timestamp"] = str(int(now.timestamp()) - 1)
    elif what == "secret":
        checked_secret = new_secret()
    else:
        forged = base64.b64encode(b"\0" * 32).decode()
        headers["webhook-signature"] = f"v1,{forged}"
    with pytest.raises(WebhookVerificationError):
        Webhook(checked_secret).verify(body, headers)
    assert not signing.verify(checked_secret, headers, body)


def test_a_stale_timestamp_is_refused_by_the_receiver() -> None:
    secret = new_secret()
    body = b"{}"
    headers = signing.headers(secret, "msg_x", datetime.now(UTC) - timedelta(minutes=6), body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, headers)


@pytest.mark.parametrize("bad", ["s3cr3t", "whsec_", "whsec_not base64!", "whsec_AAAA"])
def test_a_malformed_secret_is_an_error_that_does_not_repeat_it(bad: str) -> None:
    with pytest.raises(ValueError, match="webhook secret") as caught:
        signing.key(bad)
    assert bad.removeprefix("whsec_") not in str(caught.value) or bad == "whsec_"


def test_the_backoff_grows_by_three_from_five_seconds_to_twelve_hours() -> None:
    middle = [policy.backoff(n, lambda: 0.5) for n in range(1, 12)]
    assert [d.total_seconds() for d in middle] == [
        5, 15, 45, 135, 405, 1215, 3645, 10935, 32805, 43200, 43200,
    ]  # fmt: skip
    assert policy.backoff(1, lambda: 0.0) == timedelta(seconds=4)
    assert policy.backoff(1, lambda: 0.999999) < timedelta(seconds=6)
    assert policy.backoff(40, lambda: 0.999999) == timedelta(hours=12)
    assert policy.backoff(1, lambda: 0.5, retry_after=120) == timedelta(seconds=120)
    assert policy.backoff(1, lambda: 0.5, retry_after=10**9) == timedelta(hours=12)


def test_an_event_is_retried_until_its_max_age_then_given_up() -> None:
    created, max_age = NOW, timedelta(hours=72)
    at, failures, tries = created, 0, []
    while True:
        failures += 1
        following = policy.next_attempt(
            created_at=created, failures=failures, now=at, max_age=max_age, rand=lambda: 0.5
        )
        if following is None:
            break
        tries.append(following)
        at = following
    assert tries[-1] == created + max_age  # the last attempt is made at the deadline
    assert len(tries) == 14
    assert all(b > a for a, b in itertools.pairwise(tries))


def test_what_an_answer_means() -> None:
    assert [policy.verdict(c) for c in (200, 201, 204, 299)] == [Verdict.DELIVERED] * 4
    assert [policy.verdict(c) for c in (None, 301, 302, 400, 404, 429, 500, 503)] == [
        Verdict.RETRY
    ] * 8
    assert policy.verdict(410) is Verdict.GONE
    assert policy.retry_after("30") == 30
    assert policy.retry_after(" 7 ") == 7
    assert policy.retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert policy.retry_after(None) is None
    assert policy.retry_after("-1") is None


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("93.184.215.14", False), ("2606:4700::1111", False),
        ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True),
        ("169.254.169.254", True), ("100.64.0.1", True), ("224.0.0.1", True),
        ("0.0.0.0", True),  # noqa: S104 - a value: nothing listens
        ("255.255.255.255", True), ("::1", True), ("::", True), ("fe80::1", True),
        ("fc00::1", True), ("ff02::1", True), ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True), ("2002:7f00:1::", True), ("64:ff9b::a00:1", True),
        ("fe80::1%eth0", True), ("not-an-ip", True),
    ],
)  # fmt: skip
def test_which_addresses_a_webhook_may_reach(address: str, refused: bool) -> None:
    assert (refused_address(address, allow_private=False) is not None) == refused
    if address != "not-an-ip":
        assert refused_address(address, allow_private=True) is None


def _resolver(table: dict[str, Sequence[str]]) -> object:
    async def resolve(host: str) -> Sequence[str]:
        await asyncio.sleep(0)
        if host not in table:
            raise OSError(-2, "Name or service not known")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.org/in", "must use https"),
        ("ftp://hooks.example.org/in", "must start with https"),
        ("hooks.example.org/in", "must start with https"),
        ("https://user:pw@hooks.example.org/in", "no user or password"),
        ("https://hooks.example.org/in#x", "fragment"),
        ("https:///in", "no host"),
        ("https://hooks.example.org:99999/", "not a URL"),
        ("https://hooks.example.org/a b", "spaces"),
        ("https://127.0.0.1/in", "loopback"),
        ("https://[::1]/in", "loopback"),
        ("https://inside.example.org/in", "private"),
        ("https://mixed.example.org/in", "private"),
        ("https://nowhere.example.org/in", "cannot be resolved"),
        ("https://x.example.org/" + "a" * 2000, "over 2000"),
    ],
)
async def test_refused_urls_say_why(url: str, message: str) -> None:
    resolve = _resolver(
        {"hooks.example.org": ["93.184.215.14"], "inside.example.org": ["10.0.0.7"],
         "mixed.example.org": ["93.184.215.14", "192.168.0.2"]}
    )  # fmt: skip
    with pytest.raises(TargetError, match=message):
        await check_url(url, False, resolve)  # type: ignore[arg-type]


async def test_accepted_urls_and_how_they_are_shown() -> None:
    resolve = _resolver({"hooks.example.org": ["93.184.215.14"], "localhost": ["127.0.0.1"]})
    target = await check_url("https://Hooks.Example.org./in?token=s3cret", False, resolve)  # type: ignore[arg-type]
    assert (target.host, target.port, target.addresses) == (
        "hooks.example.org",
        443,
        ("93.184.215.14",),
    )
    assert (await check_url("http://localhost:8080/", True, resolve)).port == 8080  # type: ignore[arg-type]
    assert (
        parse_url("https://[2606:4700::1111]:8443/x", allow_private=False).host == "2606:4700::1111"
    )
    assert shown("https://hooks.example.org/in?token=s3cret") == "https://hooks.example.org/in?..."
    assert "s3cret" not in shown("https://u:s3cret@hooks.example.org/in")


def test_an_odd_retry_after_is_ignored() -> None:
    assert policy.retry_after("120") == 120.0
    for odd in ("²", "\u0663", "-1", "1.5", "", None, "Wed, 21 Oct 2026 07:28:00 GMT"):
        assert policy.retry_after(odd) is None


async def test_a_host_httpx_cannot_encode_and_a_site_local_address_are_refused() -> None:
    async def public(host: str) -> list[str]:
        return ["93.184.215.14"]

    with pytest.raises(TargetError, match="not a valid domain name"):
        await check_url("https://\u2603.net/hook", False, public)
    assert await check_url("https://b\u00fccher.example/x", False, public)
    assert refused_address("fec0::1", allow_private=False) is not None

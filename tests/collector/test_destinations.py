"""The webhook destination policy and URL redaction, alone: pure functions, no connection is made (tests
never send anything to an address outside loopback, so refusals of other ranges are checked here)."""

from __future__ import annotations

import ipaddress

import pytest

from collector.destinations import refusal, scrub, shown, userinfo_problem


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # cloud metadata services
        ("fe80::1", "link-local"),
        ("fe80::1%2", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # shared address space (carrier-grade NAT)
        ("fd00::1", "private"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("0.1.2.3", "reserved"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),  # documentation
        ("198.18.0.1", "reserved"),  # benchmarking
        ("::7f00:1", "reserved"),  # IPv4-compatible (deprecated)
        ("2001:db8::1", "reserved"),
        ("64:ff9b:1::1", "reserved"),  # local-use NAT64
    ],
)
def test_internal_addresses_are_refused(host: str, kind: str) -> None:
    reason = refusal(host)
    assert reason is not None and reason.startswith(f"{host} is {kind}"), reason


@pytest.mark.parametrize(
    ("host", "inner", "kind"),
    [
        ("::ffff:127.0.0.1", None, "loopback"),  # IPv4-mapped: 127.0.0.1 on the wire
        ("::ffff:169.254.169.254", None, "link-local"),
        ("::ffff:10.0.0.1", None, "private"),
        ("64:ff9b::7f00:1", "127.0.0.1", "loopback"),  # NAT64
        ("64:ff9b::a9fe:a9fe", "169.254.169.254", "link-local"),
        ("2002:7f00:1::1", "127.0.0.1", "loopback"),  # 6to4
        ("2002:c0a8:101::", "192.168.1.1", "private"),
    ],
)
def test_ipv6_forms_of_internal_ipv4_addresses_are_refused(host: str, inner: str | None, kind: str) -> None:
    reason = refusal(host)
    assert reason is not None and kind in reason, reason
    if inner is not None:
        assert f"embeds {inner}" in reason


@pytest.mark.parametrize(
    "host", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(host: str) -> None:
    assert refusal(host) is None


def test_allowed_networks_open_chosen_ranges_only() -> None:
    allow = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.20.0.0/16"))
    for host in ("127.0.0.1", "::ffff:127.0.0.1", "10.20.3.4", "64:ff9b::7f00:1", "8.8.8.8"):
        assert refusal(host, allow) is None, host
    for host in ("::1", "10.21.0.1", "169.254.169.254", "192.168.0.1"):
        assert refusal(host, allow) is not None, host


def test_a_name_is_not_an_address() -> None:
    assert refusal("localhost") == "'localhost' is not an IP address"


def test_urls_are_shown_without_credentials_or_query() -> None:
    url = "https://user:pa%40ss@hooks.example.com:8443/in/x?token=s3cret#frag"
    assert shown(url) == "https://hooks.example.com:8443/in/x"
    assert shown(url, query=True) == "https://hooks.example.com:8443/in/x?token=s3cret"
    assert shown("http://[::1") == "(a URL that cannot be parsed)"


def test_error_messages_lose_the_urls_secrets_however_quoted() -> None:
    url = "https://user:pa%40ss@hooks.example.com/in?token=s3cret"
    for message in (
        f"InvalidURL: {url}",
        "ClientError: https://user:pa@ss@hooks.example.com/in?token=s3cret",
        "Cannot connect (auth user:pa%40ss, query token=s3cret)",
    ):
        cleaned = scrub(message, url)
        for secret in ("pa%40ss", "pa@ss", "token=s3cret", "s3cret", "user:"):
            assert secret not in cleaned, (message, cleaned)
    assert scrub(f"InvalidURL: {url}", url) == "InvalidURL: https://hooks.example.com/in"
    assert scrub("HTTP 500", url) == "HTTP 500"
    assert scrub("bad http://[::1", "http://u:p@[::1") == "bad http://[::1"


def test_credentials_in_a_url_are_a_problem() -> None:
    for url in ("https://u:p@x.example/", "https://u@x.example/", "https://:p@x.example/", "http://@x.example/"):
        assert userinfo_problem(url) is not None, url
    assert userinfo_problem("https://x.example/a@b?c=d@e") is None

"""Bounce return paths (VERP): one delivery per address, signed, short, case-proof; a forged,
mangled or foreign one names no delivery; a key rotated out of the list stops reading."""

from __future__ import annotations

import pytest

from mailer.tokens import Signer, read_return_path, return_path

KEY, OTHER = "k" * 43, "o" * 43
DOMAIN = "bounces.example.org"


@pytest.mark.parametrize("delivery", [0, 1, 35, 36, 1_000_000, 2**53])
def test_a_return_path_reads_back_as_its_delivery(delivery: int) -> None:
    signer = Signer([KEY])
    address = return_path(signer, delivery, DOMAIN)
    local = address.partition("@")[0]
    assert address.endswith("@" + DOMAIN)
    assert local.startswith("b+")
    assert len(local) <= 30
    assert read_return_path(signer, address, DOMAIN) == delivery
    assert read_return_path(signer, address.upper(), DOMAIN.upper()) == delivery
    assert read_return_path(signer, f"<{address}>", DOMAIN) == delivery


def test_a_forged_or_mangled_one_names_no_delivery() -> None:
    signer = Signer([KEY])
    address = return_path(signer, 1234, DOMAIN)
    local, _, _ = address.partition("@")
    id_text, _, mac = local[2:].partition("-")
    flipped = mac[:-1] + ("a" if mac[-1] != "a" else "b")
    other_id = return_path(signer, 1235, DOMAIN).partition("@")[0][2:].partition("-")[0]
    for bad in (
        f"b+{id_text}-{flipped}@{DOMAIN}",  # a changed mac
        f"b+{other_id}-{mac}@{DOMAIN}",  # another delivery's id with this mac
        f"b+{id_text}@{DOMAIN}",  # no mac
        f"{id_text}-{mac}@{DOMAIN}",  # no prefix
        f"{local}@elsewhere.example.org",  # another domain
        return_path(Signer([OTHER]), 1234, DOMAIN),  # another key
        f"b+{'z' * 40}-{mac}@{DOMAIN}",  # an id too long to be one
        f"b+!!-{mac}@{DOMAIN}",
        "", "@", "b+-@" + DOMAIN,
    ):  # fmt: skip
        assert read_return_path(signer, bad, DOMAIN) is None, bad


def test_rotation_reads_old_paths_until_the_key_is_dropped() -> None:
    old = return_path(Signer([OTHER]), 7, DOMAIN)
    rotated = Signer([KEY, OTHER])
    assert read_return_path(rotated, old, DOMAIN) == 7
    assert return_path(rotated, 7, DOMAIN) != old  # new mail is signed with the new key
    assert read_return_path(Signer([KEY]), old, DOMAIN) is None

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infermeter.attribution import (
    INVALID,
    MISSING,
    OTHER,
    Attribute,
    Attribution,
    parse_attribute,
    parse_attributes,
)


def test_parse_attribute() -> None:
    assert parse_attribute("team=X-Team") == Attribute("team", "x-team")
    assert parse_attribute(" feature = X-Feature ").spec == "feature=x-feature"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("team", "expected NAME=HEADER"),
        ("=X-Team", "expected NAME=HEADER"),
        ("team=", "expected NAME=HEADER"),
        ("1team=X-Team", "must match"),
        ("__team=X-Team", "must match"),
        ("te-am=X-Team", "must match"),
        ("model=X-Model", "clashes"),
        ("code=X-Code", "clashes"),
        ("error_type=X-E", "clashes"),
        ("currency=X-C", "clashes"),
        ("namespace=X-NS", "clashes"),
        ("team=X Team", "not an HTTP header name"),
        ("team=Authorization", "credentials"),
        ("user=Cookie", "credentials"),
    ],
)
def test_bad_attribute_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_attribute(spec)


def test_duplicates_are_refused() -> None:
    with pytest.raises(ValueError, match="label 'team' is given twice"):
        parse_attributes(["team=X-Team", "team=X-Owner"])
    with pytest.raises(ValueError, match="header 'x-team' is given twice"):
        parse_attributes(["team=X-Team", "owner=x-team"])


def resolver(limit: int = 32) -> Attribution:
    return Attribution(parse_attributes(["team=X-Team", "feature=X-Feature"]), limit)


def test_values_in_label_order_missing_is_none() -> None:
    attribution = resolver()
    assert attribution.labels == ("team", "feature")
    headers = [(b"x-feature", b"search"), (b"content-type", b"json"), (b"x-team", b"ads")]
    assert attribution.values(headers) == ("ads", "search")
    assert attribution.values([(b"x-team", b"ads")]) == ("ads", MISSING)
    assert attribution.values([(b"x-team", b"  ")]) == (MISSING, MISSING)
    assert attribution.values([(b"x-team", b"a"), (b"x-team", b"b")]) == ("a", MISSING)


@pytest.mark.parametrize(
    "raw",
    [b"a b", b"x" * 65, b"_other", b"team\n", b"caf\xc3\xa9", b'a"b', b"{x}", b"a,b", b"<script>"],
)
def test_hostile_values_become_invalid(raw: bytes) -> None:
    assert resolver().values([(b"x-team", raw)])[0] == INVALID


def test_valid_values_are_kept_as_sent() -> None:
    for raw in (b"ads", b"Search-2", b"team.a/b:c", b"x" * 64, b"none", b"a_b"):
        assert resolver().values([(b"x-team", raw)])[0] == raw.decode()


def test_each_label_is_capped_on_its_own() -> None:
    attribution = resolver(limit=3)
    teams = {attribution.values([(b"x-team", b"t%d" % i)])[0] for i in range(10_000)}
    assert teams == {"t0", "t1", "t2", OTHER}
    # the feature label still has all its slots, and a known team keeps its own label
    assert attribution.values([(b"x-team", b"t1"), (b"x-feature", b"f")]) == ("t1", "f")


@given(st.binary(max_size=80))
def test_any_header_value_gives_a_safe_label(raw: bytes) -> None:
    value = resolver().values([(b"x-team", raw)])[0]
    assert value in (MISSING, INVALID, OTHER) or (
        len(value) <= 64 and value.isascii() and value.isprintable() and " " not in value
    )
    assert not any(char in value for char in '"\\\n{}=,')


def test_no_attributes_resolve_to_nothing() -> None:
    attribution = Attribution((), 32)
    assert not attribution
    assert attribution.values([(b"x-team", b"a")]) == ()

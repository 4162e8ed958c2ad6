"""`picas.security.updated`: which members a database ends up with."""
from __future__ import annotations

from picas import security

COUCHDB3_NEW = {"admins": {"names": [], "roles": ["_admin"]},
                "members": {"names": [], "roles": ["_admin"]}}


def test_a_database_without_members_gets_the_default_member():
    for current in ({}, COUCHDB3_NEW):
        after = security.updated(current, default_member="me")
        assert "me" in after["members"]["names"]
        assert not security.is_public(after)


def test_given_members_replace_the_default_and_add_to_existing_ones():
    after = security.updated({"members": {"names": ["alice"]}}, members=["bob"],
                             member_roles=["pilots"], default_member="me")
    assert after["members"] == {"names": ["alice", "bob"], "roles": ["pilots"]}


def test_public_drops_the_members_and_keeps_the_admins():
    after = security.updated({"admins": {"names": ["ann"]}, "members": {"names": ["bob"]}},
                             public=True, default_member="me")
    assert security.is_public(after) and after["admins"] == {"names": ["ann"]}


def test_couchdb3s_admin_only_default_is_not_public():
    assert not security.is_public(COUCHDB3_NEW) and security.is_public({})

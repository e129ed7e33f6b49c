"""Registry against a real PostgreSQL: tokens, authentication, school ownership, idempotent import."""

from __future__ import annotations

import pytest

from broker.access.credentials import Credentials, Kind, token_hash
from broker.access.registry import Registry, read_schools_csv
from broker.domain.faults import InvalidContent, SenderIsNotRegistered


async def test_token_is_shown_once_and_only_its_hash_is_stored(db_pool):
    registry = Registry(db_pool)
    token = await registry.add_vendor("dnevnik-plus")

    stored = await db_pool.fetchval("SELECT token_hash FROM credentials WHERE kind = 'vendor' AND name = 'dnevnik-plus'")
    assert bytes(stored) == token_hash(token)
    assert token.encode() not in bytes(stored)
    principal = await Credentials(db_pool).authenticate(token)
    assert (principal.kind, principal.name) == (Kind.VENDOR, "dnevnik-plus")


async def test_missing_unknown_and_revoked_tokens_are_refused(db_pool):
    registry = Registry(db_pool)
    credentials = Credentials(db_pool)
    token = await registry.add_vendor("dnevnik-plus")
    for bad in (None, "", "ejx_not-a-token", token + "x"):
        with pytest.raises(SenderIsNotRegistered):
            await credentials.authenticate(bad)
    await credentials.revoke(Kind.VENDOR, "dnevnik-plus")
    with pytest.raises(SenderIsNotRegistered):
        await credentials.authenticate(token)
    with pytest.raises(SenderIsNotRegistered):
        await registry.vendor("dnevnik-plus")  # nor can an operator import for it


async def test_a_vendor_name_is_registered_once(db_pool):
    registry = Registry(db_pool)
    await registry.add_vendor("dnevnik-plus")
    with pytest.raises(InvalidContent):
        await registry.add_vendor("dnevnik-plus")


async def test_schools_import_is_idempotent_and_accepts_russian_cp1251(db_pool):
    registry = Registry(db_pool)
    await registry.add_vendor("dnevnik-plus")
    await registry.add_vendor("shkola-online")
    text = ("Код школы;Наименование;Район;Поставщик\n"
            "sch-001;Школа № 1;Центральный;dnevnik-plus\n"
            "sch-002;Гимназия № 2;Северный;shkola-online\n")
    schools = list(read_schools_csv(text.encode("cp1251")))

    assert await registry.import_schools(schools) == (2, 0)
    assert await registry.import_schools(schools) == (0, 2)
    assert await db_pool.fetchval("SELECT count(*) FROM schools") == 2
    assert await registry.school_vendors(["sch-001", "sch-002", "sch-404"]) == {
        "sch-001": "dnevnik-plus", "sch-002": "shkola-online"}


async def test_schools_of_an_unknown_vendor_are_refused_whole(db_pool):
    registry = Registry(db_pool)
    await registry.add_vendor("dnevnik-plus")
    schools = list(read_schools_csv(b"school_id,name,district,vendor\n"
                                    b"s1,One,North,dnevnik-plus\ns2,Two,North,nobody\n"))
    with pytest.raises(InvalidContent, match="nobody"):
        await registry.import_schools(schools)
    assert await db_pool.fetchval("SELECT count(*) FROM schools") == 0

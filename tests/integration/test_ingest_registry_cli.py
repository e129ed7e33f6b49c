"""``ejx vendors`` and ``ejx schools`` as an operator runs them, against a real PostgreSQL."""

from __future__ import annotations

from click.testing import CliRunner

from broker.access.credentials import token_hash
from broker.app.cli import main


def test_vendors_add_prints_the_token_once_and_list_never_shows_it(database_url, tmp_path):
    runner = CliRunner()
    env = {"EJX_DATABASE_URL": database_url}
    added = runner.invoke(main, ["vendors", "add", "dnevnik-plus"], env=env)
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[0]
    assert token.startswith("ejx_") and len(token) > 40

    listed = runner.invoke(main, ["vendors", "list"], env=env)
    assert listed.exit_code == 0 and "dnevnik-plus" in listed.stdout and token not in listed.stdout
    assert token_hash(token).hex() not in listed.stdout

    twice = runner.invoke(main, ["vendors", "add", "dnevnik-plus"], env=env)
    assert twice.exit_code == 1 and "InvalidContent" in twice.stderr

    schools = tmp_path / "schools.csv"
    schools.write_text("school_id,name,district,vendor\nsch-1,Школа № 1,Центральный,dnevnik-plus\n", "utf-8")
    first = runner.invoke(main, ["schools", "import", str(schools)], env=env)
    second = runner.invoke(main, ["schools", "import", str(schools)], env=env)
    assert first.exit_code == second.exit_code == 0
    assert first.stdout.startswith("1 school(s) added or changed, 0 unchanged")
    assert second.stdout.startswith("0 school(s) added or changed, 1 unchanged")


def test_list_shows_registration_and_rotation_in_moscow_time(database_url):
    """People read times in Moscow time: 21:30 UTC is 00:30 of the next day in Moscow."""
    import asyncio

    import asyncpg

    runner = CliRunner()
    env = {"EJX_DATABASE_URL": database_url}
    assert runner.invoke(main, ["operators", "add", "on-call"], env=env).exit_code == 0
    assert runner.invoke(main, ["operators", "rotate", "on-call"], env=env).exit_code == 0

    async def backdate() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE credentials SET created_at = '2026-10-13T21:30:00Z', "
                               "rotated_at = '2026-10-14T06:00:00Z' WHERE name = 'on-call'")
        finally:
            await conn.close()
    asyncio.run(backdate())

    listed = runner.invoke(main, ["operators", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == [
        "on-call\tactive\t-\t2026-10-14 00:30:00 MSK\trotated 2026-10-14 09:00:00 MSK"]

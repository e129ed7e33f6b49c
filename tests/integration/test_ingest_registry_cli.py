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

"""Evidence of what ejx signed and received: the hash-chained message log and its signed archives.

A package of its own (not ``delivery``, not ``ops``) because its readers differ:
delivery moves messages and forgets them after a few days; the message log keeps
proof of them for years and is read by auditors, offline, without a database.

- :mod:`broker.audit.chain` — the pure record model and hash chain (no I/O);
- :mod:`broker.audit.message_log` — appends on a writer's own transaction,
  live verification and retention in PostgreSQL;
- :mod:`broker.audit.archive` — signed archive files, written and verified offline.
"""

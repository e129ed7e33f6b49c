"""The reference receivers' own tables, kept out of production's migrations."""

from broker.infra.migrations import MigrationSet

RECEIVER_TABLES = MigrationSet(__name__, "devtools")
"""receiver_messages and receiver_rejects: what the reference portal and interagency receivers took."""

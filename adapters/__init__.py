"""Vendor-facing ingestion: REST API, CSV exports, OneRoster 1.2."""

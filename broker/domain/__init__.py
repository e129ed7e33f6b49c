"""The pure domain: canonical events and marks (model), faults, routing rules. No I/O imports."""

"""Running ejx: metrics, health probes, structured logs."""

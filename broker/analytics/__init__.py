"""For education authorities and parents: projections, their HTTP API, the dashboard."""

"""``ejx chaos``: the pipeline as separate processes under a vendor's load while targets are killed at random."""

"""``ejx demo``: a whole school day through ejx, in a database and topics of its own (run.py)."""

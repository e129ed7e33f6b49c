"""Who may do what: vendors and their schools, portal clients, tokens."""

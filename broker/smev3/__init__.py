"""SMEV 3: the message-exchange protocol (1.2, 1.3) agencies speak, served by ejx."""

"""XML trust: the one hardened parser, XSD schemas, the envelope, signatures (signing/)."""

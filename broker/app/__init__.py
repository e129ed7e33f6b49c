"""The running application: one bootstrap that wires every component, and the ejx CLI."""

"""Local servers the tests talk to instead of outside services."""

"""discopop-cli: reproduce and extend DiscoPOP-aligned chat models with TRL."""

__version__ = "0.1.0"

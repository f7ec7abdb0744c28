"""The example application served by ``make demo``."""

"""The plugin's version, read by setup.cfg and written into every archive."""
VERSION = "0.1.0"

"""The `meter` command line."""

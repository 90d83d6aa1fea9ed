"""The ``diffrl`` command: a thin dispatcher over Hydra applications (one per subcommand)."""

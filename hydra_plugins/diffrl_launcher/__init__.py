"""diffrl's Hydra launcher plugins (Hydra only instantiates launchers found under ``hydra_plugins``)."""

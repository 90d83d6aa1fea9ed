"""Errors a training run can end with, shared by every training path."""


class TrainingDiverged(RuntimeError):
    """Training produced non-finite values it cannot recover from; the message names the switches that help."""


class ConfigError(ValueError):
    """A composed config that cannot run; raised before anything is built or compiled."""

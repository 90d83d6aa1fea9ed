"""Errors a training run can end with, shared by every training path."""


class TrainingDiverged(RuntimeError):
    """Training produced non-finite values it cannot recover from; the message names the switches that help."""

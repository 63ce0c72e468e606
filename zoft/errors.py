"""Errors caused by the user's input (config, data, model path). The command line prints these
as one clear message instead of a traceback."""


class ZoftUserError(Exception):
    """Bad input: the message names the bad value and what would be valid."""


class MethodError(ZoftUserError, ValueError):
    """A method cannot be applied to this model (wrong family, missing modules, bad option)."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or an implausible projected gradient."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"training diverged at step {step}: {reason}")
        self.step = step
        self.reason = reason


class Preempted(Exception):
    """A SIGTERM/SIGUSR1 arrived; the state was checkpointed and the run can resume."""

    def __init__(self, step: int, signal_name: str) -> None:
        # python train.py adds the command that resumes it (the run folder named).
        super().__init__(f"stopped by {signal_name} after step {step}; checkpoint saved")
        self.step = step
        self.signal_name = signal_name

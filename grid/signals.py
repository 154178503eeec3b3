"""How arb stops: one place for the signal handling that the CLI and the Ray driver share."""

from __future__ import annotations

import os
import signal
import threading


def stop_on_sigterm() -> None:
    """SIGTERM stops arb as Ctrl-C does: job schedulers stop a process with it (SLURM's time limit and scancel,
    Kubernetes, systemd). Called again after `ray.init`, whose driver installs its own SIGTERM handler (it prints a
    stack and exits 1, leaving trials running in MLflow). A background job of a non-interactive shell (an sbatch
    script) starts with SIGINT ignored, which Python would keep."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

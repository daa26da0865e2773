"""A local Kubernetes API emulator for operator tests and benchmarks (see docs/testing.md)."""

from .emulator import KubeEmulator, free_port
from .server import Fault, Write
from .store import ApiError, ValidationRecord
from .validation import KUBERNETES_VERSION

__all__ = [
    "KUBERNETES_VERSION",
    "ApiError",
    "Fault",
    "KubeEmulator",
    "ValidationRecord",
    "Write",
    "free_port",
]

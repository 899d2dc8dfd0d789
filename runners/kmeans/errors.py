"""The K-Means service's errors, in a module without heavy imports: the CLI and the driver
catch them without importing Ray (``runners.kmeans.service`` raises them)."""

from __future__ import annotations


class ServiceError(RuntimeError):
    """A K-Means service operation failed for a reason that retrying will not fix."""


class ServiceUnavailableError(ServiceError):
    """The Ray cluster or the service actor cannot be reached (or did not answer in time)."""


class ServiceCallFailedError(ServiceUnavailableError):
    """One attempt at a service call failed transiently (the actor restarting or unreachable,
    a dropped connection): ``retryable``, so Beam's ``RemoteModelHandler`` tries again."""

    retryable = True


class ModelNotFoundError(ServiceError, LookupError):
    """No model with this id in the service's memory nor in its ``model_dir``."""

"""The client wing: the endpoint client, batch submits, the orchestrator providers and live sessions.

It imports only the request contract and the error codes, never the server (no pipeline, engines,
torch or OpenCV), so an orchestrator can install and import it cheaply.
"""

from .endpoint import AvatarClient, ClientConfig, EndpointError, JobFailed, JobNotFound, JobStatus, RenderResult

__all__ = ["AvatarClient", "ClientConfig", "EndpointError", "JobFailed", "JobNotFound", "JobStatus", "RenderResult"]

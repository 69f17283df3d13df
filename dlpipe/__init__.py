"""dlpipe's Python client: submit jobs, follow them, verify their webhooks.

    import dlpipe

    with dlpipe.Client("http://127.0.0.1:8000") as client:
        job = client.submit("image-classify", files=["cat.jpg"], wait=True)
        print(job.outputs[0].result["labels"][0])

Everything public is in `__all__` (docs/client.md); the modules with a leading underscore are
not part of it. It needs only dlpipe's base dependencies (httpx, pydantic): no torch.
"""

from dlpipe._async import AsyncClient
from dlpipe._errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    DlpipeError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    TransportError,
    UnavailableError,
    WebhookVerificationError,
)
from dlpipe._sse import Event
from dlpipe._sync import Client
from dlpipe._webhooks import WebhookEvent, verify_webhook
from services.api.schemas import JobSummary, PipelineInfo
from shared.messages import ItemOutput, ItemStatus, JobStatus, JobView, Progress

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "DlpipeError",
    "Event",
    "InvalidRequestError",
    "ItemOutput",
    "ItemStatus",
    "JobStatus",
    "JobSummary",
    "JobView",
    "NotFoundError",
    "PipelineInfo",
    "Progress",
    "RateLimitedError",
    "TransportError",
    "UnavailableError",
    "WebhookEvent",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
]

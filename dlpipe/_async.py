"""`dlpipe.AsyncClient`: the API from asyncio code (httpx.AsyncClient underneath). The same calls
as `dlpipe.Client`, each awaited; `jobs()` and `events()` are async iterators."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from dlpipe import _core
from dlpipe._errors import TransportError
from dlpipe._sse import Event, SSEParser
from services.api.schemas import JobList, JobSummary, PipelineInfo
from shared.messages import JobStatus, JobView


class AsyncClient:
    """A client of one dlpipe API, for asyncio; see `dlpipe.Client` (same arguments and retries)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 8,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 16,
    ) -> None:
        self.url = _core.base_url(url)
        self.timeout = timeout
        self.retry = _core.RetryPolicy(max_retries=max_retries)
        self._sleep = asyncio.sleep
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=_core.headers(_core.api_key(api_key), headers),
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: _core.Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.send(call.build(self._http), stream=call.stream)
            except httpx.TransportError as exc:
                delay = self.retry.after_error(call, exc, attempt)
                if delay is None:
                    raise TransportError(f"{call.method} {call.path}: {type(exc).__name__}: {exc}") from exc
            else:
                delay = self.retry.after_response(call, response, attempt)
                if delay is None:
                    if response.status_code >= 400 and call.stream:
                        await response.aread()
                        await response.aclose()
                    return _core.check(response)
                await response.aclose()
            await self._sleep(delay)
            attempt += 1

    async def submit(
        self,
        pipeline: str,
        *,
        files: Sequence[_core.FileInput] | None = None,
        inputs: Sequence[Mapping[str, Any]] | None = None,
        wait: bool | float | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        options: Mapping[str, Any] | None = None,
        keep_inputs: bool | None = None,
        idempotency_key: str | None = None,
    ) -> JobView:
        """See `Client.submit`."""
        wait_s = _core.wait_seconds(wait)
        deadline = time.monotonic() + (wait_s or 0)
        call = _core.submit_call(
            pipeline,
            files=files,
            inputs=inputs,
            webhook=webhook,
            webhook_events=webhook_events,
            metadata=metadata,
            timeout_s=timeout_s,
            options=options,
            keep_inputs=keep_inputs,
            idempotency_key=idempotency_key,
            wait_s=wait_s,
            max_wait_per_request_s=_core.LONG_POLL_S * 2,
            http_timeout=self.timeout,
        )
        view = JobView.model_validate_json((await self._send(call)).content)
        if wait_s is None or view.status.is_final or _core.remaining(deadline) <= 0:
            return view
        return await self.wait(view.id, timeout=None if wait_s == float("inf") else _core.remaining(deadline))

    async def job(self, job_id: str, *, wait_s: float = 0) -> JobView:
        """See `Client.job`."""
        call = _core.job_call(job_id, wait_s=wait_s, http_timeout=self.timeout)
        return JobView.model_validate_json((await self._send(call)).content)

    async def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        """See `Client.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _core.LONG_POLL_S
            if deadline is not None:
                left = min(left, _core.remaining(deadline))
            call = _core.job_call(job_id, wait_s=max(0.0, left), http_timeout=self.timeout)
            view = JobView.model_validate_json((await self._send(call)).content)
            if view.status.is_final or (deadline is not None and _core.remaining(deadline) <= 0):
                return view

    async def cancel(self, job_id: str) -> JobView:
        return JobView.model_validate_json((await self._send(_core.cancel_call(job_id))).content)

    async def jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        pipeline: str | None = None,
        limit: int | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[JobSummary]:
        """See `Client.jobs` (an async iterator)."""
        cursor = None
        seen = 0
        while True:
            size = max(1, min(200, page_size if limit is None else min(page_size, limit - seen)))
            response = await self._send(_core.list_call(status, pipeline, size, cursor))
            page = JobList.model_validate_json(response.content)
            for summary in page.jobs:
                yield summary
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def events(self, job_id: str, *, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """See `Client.events` (an async iterator)."""
        last = last_event_id
        breaks = 0
        while True:
            response = await self._send(_core.events_call(job_id, last, max(self.timeout, 60.0)))
            parser = SSEParser()
            try:
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    breaks = 0
                    yield event
                    if event.type == "completed":
                        return
            except httpx.TransportError:
                pass
            finally:
                await response.aclose()
            last = parser.last_id or last
            if breaks >= self.retry.max_retries:
                raise TransportError(f"the events of job {job_id} kept breaking off before `completed`")
            await self._sleep(self.retry.backoff(breaks))
            breaks += 1

    async def pipelines(self) -> list[PipelineInfo]:
        return [PipelineInfo.model_validate(p) for p in (await self._send(_core.pipelines_call())).json()]

    async def pipeline(self, name: str) -> PipelineInfo:
        return PipelineInfo.model_validate_json((await self._send(_core.pipelines_call(name))).content)

"""`dlpipe.Client`: the API from synchronous code (httpx.Client underneath)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx

from dlpipe import _core
from dlpipe._errors import TransportError
from dlpipe._sse import Event, SSEParser
from services.api.schemas import JobList, JobSummary, PipelineInfo
from shared.messages import JobStatus, JobView


class Client:
    """A client of one dlpipe API.

    `url` defaults to $DLPIPE_URL (else http://127.0.0.1:8000), `api_key` to $DLPIPE_API_KEY.
    429 and 503 answers are retried after their Retry-After (else with exponential backoff), up to
    `max_retries` times; so is a broken connection, for calls that are safe to send twice (reads,
    and submits: each carries an Idempotency-Key). Errors raise `dlpipe.APIError` subclasses.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 8,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 16,
    ) -> None:
        self.url = _core.base_url(url)
        self.timeout = timeout
        self.retry = _core.RetryPolicy(max_retries=max_retries)
        self._sleep = time.sleep
        self._http = httpx.Client(
            base_url=self.url,
            headers=_core.headers(_core.api_key(api_key), headers),
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: _core.Call) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.send(call.build(self._http), stream=call.stream)
            except httpx.TransportError as exc:
                delay = self.retry.after_error(call, exc, attempt)
                if delay is None:
                    raise TransportError(f"{call.method} {call.path}: {type(exc).__name__}: {exc}") from exc
            else:
                delay = self.retry.after_response(call, response, attempt)
                if delay is None:
                    if response.status_code >= 400 and call.stream:
                        response.read()
                        response.close()
                    return _core.check(response)
                response.close()
            self._sleep(delay)
            attempt += 1

    def submit(
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
        """Submit one job: `files` (paths, bytes, file objects or (name, content[, type]) pairs,
        sent as multipart) or `inputs` (JSON objects, e.g. {"text": ...}). `wait`: True waits until
        the job ends, a number up to that many seconds (the job is returned as it is then); None
        returns at once (the job `queued`). The same `idempotency_key` with the same request gives
        back the first job (a fresh key is made when none is given)."""
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
        view = JobView.model_validate_json(self._send(call).content)
        if wait_s is None or view.status.is_final or _core.remaining(deadline) <= 0:
            return view
        return self.wait(view.id, timeout=None if wait_s == float("inf") else _core.remaining(deadline))

    def job(self, job_id: str, *, wait_s: float = 0) -> JobView:
        """The job as it is now (`GET /v1/jobs/{id}`); with `wait_s`, one long poll: the answer
        comes when the job ends or after `wait_s` seconds (capped by the API's DLPIPE_MAX_WAIT_S)."""
        call = _core.job_call(job_id, wait_s=wait_s, http_timeout=self.timeout)
        return JobView.model_validate_json(self._send(call).content)

    def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        """The job once it has ended (long polls of `GET /v1/jobs/{id}?wait_s=`); with `timeout`,
        the job as it is after that many seconds if it has not ended by then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _core.LONG_POLL_S
            if deadline is not None:
                left = min(left, _core.remaining(deadline))
            call = _core.job_call(job_id, wait_s=max(0.0, left), http_timeout=self.timeout)
            view = JobView.model_validate_json(self._send(call).content)
            if view.status.is_final or (deadline is not None and _core.remaining(deadline) <= 0):
                return view

    def cancel(self, job_id: str) -> JobView:
        """Cancel a job that has not ended (`ConflictError` if it has); the job as canceled."""
        return JobView.model_validate_json(self._send(_core.cancel_call(job_id)).content)

    def jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        pipeline: str | None = None,
        limit: int | None = None,
        page_size: int = 50,
    ) -> Iterator[JobSummary]:
        """This key's jobs, newest first (`GET /v1/jobs`, every page in turn), at most `limit`."""
        cursor = None
        seen = 0
        while True:
            size = max(1, min(200, page_size if limit is None else min(page_size, limit - seen)))
            response = self._send(_core.list_call(status, pipeline, size, cursor))
            page = JobList.model_validate_json(response.content)
            for summary in page.jobs:
                yield summary
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def events(self, job_id: str, *, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's events as they happen (`GET /v1/jobs/{id}/events`), ending after `completed`.
        A stream that breaks is opened again from the last event id."""
        last = last_event_id
        breaks = 0
        while True:
            response = self._send(_core.events_call(job_id, last, max(self.timeout, 60.0)))
            parser = SSEParser()
            try:
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    breaks = 0
                    yield event
                    if event.type == "completed":
                        return
            except httpx.TransportError:
                pass  # opened again below
            finally:
                response.close()
            last = parser.last_id or last
            if breaks >= self.retry.max_retries:
                raise TransportError(f"the events of job {job_id} kept breaking off before `completed`")
            self._sleep(self.retry.backoff(breaks))
            breaks += 1

    def pipelines(self) -> list[PipelineInfo]:
        """Every pipeline the API runs: input kind, limits, stages."""
        return [PipelineInfo.model_validate(p) for p in self._send(_core.pipelines_call()).json()]

    def pipeline(self, name: str) -> PipelineInfo:
        return PipelineInfo.model_validate_json(self._send(_core.pipelines_call(name)).content)

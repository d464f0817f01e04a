"""The `http-json` backend: any HTTP API answering JSON, read through field paths declared in YAML.

One query returns the newest events (freshness, LOG-03 sample), an optional second one the oldest
(retention). The order of the answer does not matter: times are compared, not positions.
"""

from __future__ import annotations

from typing import Any, ClassVar

from scanner.probes.base import ProbeContext, ProbeErrorReason
from scanner.probes.logbackends.base import (
    LogBackendError,
    LogEvent,
    LogSnapshot,
    collect,
    dig,
    has_value,
    newest_first,
    parse_time,
)
from scanner.probes.logbackends.httpjson import public_url, request_json, token_from_env
from scanner.probes.logbackends.spec import HttpJsonSpec, JsonFieldPaths


def json_event(item: Any, paths: JsonFieldPaths) -> LogEvent:
    def present(path: str | None) -> bool:
        return path is not None and has_value(dig(item, path))

    return LogEvent(
        parse_time(dig(item, paths.time)), present(paths.user), present(paths.subject), present(paths.action)
    )


class HttpJsonBackend:
    name: ClassVar[str] = "http-json"

    def snapshot(self, spec: Any, *, timeout_s: float, ctx: ProbeContext) -> LogSnapshot:
        assert isinstance(spec, HttpJsonSpec)
        token = token_from_env(spec.token_env)
        source = public_url(spec.url)

        def query(q: dict[str, Any]) -> list[LogEvent]:
            answer = request_json(
                spec.url,
                ctx=ctx,
                timeout_s=timeout_s,
                method=spec.method,
                params=q if spec.method == "GET" else None,
                body=q if spec.method == "POST" else None,
                token=token,
                auth_scheme=spec.auth_scheme,
                verify=spec.verify_tls,
            )
            items = collect(answer, spec.events_path)
            if items is None:
                where = f"events_path '{spec.events_path}'" if spec.events_path else "the answer"
                raise LogBackendError(ProbeErrorReason.PROTOCOL, f"{source}: {where} is not a list of events")
            return [json_event(item, spec.fields) for item in items]

        newest = query(spec.latest_query)
        times = [e.time for e in newest if e.time is not None]
        if newest and not times:
            raise LogBackendError(
                ProbeErrorReason.PROTOCOL, f"{source}: no event has a readable time at '{spec.fields.time}'"
            )
        oldest = None
        if spec.oldest_query is not None and times:
            oldest = min((e.time for e in query(spec.oldest_query) if e.time is not None), default=None)
        sample = newest_first(newest)[: spec.sample_size]
        return LogSnapshot(
            source=source,
            latest=max(times, default=None),
            oldest=oldest,
            sample=sample,
            malformed=sum(e.time is None for e in sample),
        )

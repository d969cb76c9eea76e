"""A real Dynamo worker for the tests: serves runtime_stats JSON on a Dynamo endpoint.

    NATS_SERVER=nats://127.0.0.1:PORT DYN_FILE_KV=DIR python dynamo_worker.py NAMESPACE.COMPONENT.ENDPOINT WORKER_ID

It registers through Dynamo's file discovery backend and answers over the NATS request plane (or
the one DYN_REQUEST_PLANE names, as for Dynamo's own workers), as a NIM or Dynamo backend publishing
its runtime statistics would. Each request counts one more request,
so a test sees the counter move between polls. It prints "serving" once the endpoint is registered.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from dynamo.runtime import DistributedRuntime


async def main(path: str, worker_id: str) -> None:
    runtime = DistributedRuntime(asyncio.get_running_loop(), "file", os.environ.get("DYN_REQUEST_PLANE", "nats"))
    endpoint = runtime.endpoint(path)
    served = 0

    async def runtime_stats(request, context=None):
        nonlocal served
        served += 1
        yield {
            "schema_version": 1,
            "worker_id": worker_id,
            "backend": "vllm",
            "ts": int(time.time()),
            "metrics": {
                "gauges": {"kv_cache_usage_perc": 0.25, "active_requests": 3},
                "counters": {"total_requests": 100 + served},
            },
        }

    folder = os.environ["DYN_FILE_KV"]
    before = _registrations(folder)
    serving = asyncio.ensure_future(endpoint.serve_endpoint(runtime_stats))
    while _registrations(folder) <= before:  # this instance is in discovery now
        await asyncio.sleep(0.05)
    print("serving", flush=True)
    await serving


def _registrations(folder: str) -> set[str]:
    return {os.path.join(root, name) for root, _, files in os.walk(folder) for name in files}


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

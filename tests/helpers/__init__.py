"""What the tests share: payloads and small helpers (support), the upstream server the `upstream`
fixture starts (upstream), hostile bodies (hostile, hostile_upstream), the fake NVML host (fake_nvml),
nats-server (nats_server), the secrets search (leaks), and the servers some tests run as processes of
their own by path (prometheus_client_server, dynamo_worker). Fixtures stay in tests/conftest.py."""

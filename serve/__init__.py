"""The hot path: an HTTP service scoring one lead in milliseconds as its engagement arrives.

``prox serve`` runs :func:`serve.app.create_app` under uvicorn. The parts: durable
per-lead online state (:mod:`.state`), bearer tokens with roles (:mod:`.auth`), Prometheus
metrics (:mod:`.metrics`), the champion held and swapped atomically (:mod:`.model`), the
scoring path (:mod:`.scoring`), the dynamic batching of concurrent requests
(:mod:`.batching`) and the CRM push outbox worker (:mod:`.push`).
"""

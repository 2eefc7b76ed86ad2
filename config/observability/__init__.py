"""What operators watch: health endpoints, Prometheus metrics and request logs (issue 12; docs/deployment.md).

- `endpoints`: GET /healthz, /readyz and /metrics as plain ASGI apps in front of Django (config/asgi.py routes them),
  so a probe never meets ALLOWED_HOSTS, the HTTPS redirect, sessions or a template.
- `metrics`: the request-path series (counters and histograms, aggregated over every worker process through
  prometheus-client's multiprocess mode) and the registry of scrape-time collectors that apps add to.
- `logs`: the request id on every log record, the per-request access line, LOG_FORMAT=json.
- `middleware`: counts and logs each API request.

Infrastructure: nothing here imports an app (pyproject.toml's import contracts); apps import this.
"""

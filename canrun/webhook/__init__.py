"""The validating admission webhook (``canrun serve``).

* ``service`` — the decision: modes, deadline, fail-open, exemptions, events, metrics;
  independent of the HTTP framework.
* ``app`` — FastAPI routes over the service (``/validate``, ``/healthz``, ``/readyz``, ``/metrics``).
* ``server`` — uvicorn over TLS, reloading rotated certificates without a restart.
* ``metrics`` — Prometheus metrics in a registry of their own per app.
* ``logs`` — one JSON object per log line.

The wire format (AdmissionReview v1) lives in ``canrun.kube.admission`` as pure functions.
"""

"""Helpers for the CLI tests: manifests with known container lines, and an in-process ``canrun check``."""

from __future__ import annotations

import io

import pytest

from canrun import cli

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  template:
    spec:
      containers:
        - name: app
          image: {host}/shop/web:1.0
        - name: sidecar
          image: {host}/shop/proxy:2.0
---
apiVersion: v1
kind: Service
metadata:
  name: web
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
  namespace: shop
spec:
  schedule: "0 1 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: job
              image: {host}/shop/job:3
"""
# the lines of the containers' "- name:" items above
APP_LINE, SIDECAR_LINE, JOB_LINE = 10, 12, 33

POD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug", "namespace": "shop"},
    "spec": {"containers": [{"name": "shell", "image": "{host}/shop/debug:1"}]},
}


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def summary(self) -> str:
        return self.out.strip().splitlines()[-1]


def check(*argv: str, stdin: str = "", monkeypatch: pytest.MonkeyPatch | None = None) -> Result:
    if monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["check", "--no-cache", *argv], stdout=out, stderr=err)
    assert "Traceback" not in out.getvalue() + err.getvalue()
    return Result(code, out.getvalue(), err.getvalue())

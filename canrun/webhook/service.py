"""The admission decision, independent of the HTTP framework.

``AdmissionService.review(body)`` is the whole webhook: read the review, decide
whether there is anything to judge, pick the namespace's mode, judge the pod
spec within the deadline, and shape the answer for the mode.  The FastAPI app
only moves bytes.

Why it is built this way:

* **Fail open.**  A webhook on the write path of every workload must never be
  the reason a deploy hangs: an image not resolved within the deadline, a
  registry that is down, a node list not yet known or a bug in canrun all
  answer "allowed" with a warning (only ``strict`` turns unreadable images into
  denials in enforce mode).
* **The judgement outlives the request.**  Validation runs as a task of its own;
  when the deadline passes the answer goes out and the task keeps going, so its
  result lands in the caches and the next request for the same image is
  answered from them.
* **Share work.**  Concurrent requests for the same pod spec share one task, and
  below them the ImageStore shares one resolution per image (single-flight), so
  a burst of identical admissions costs one registry round trip.
* **Cheap when nothing changed.**  UPDATEs that change nothing a verdict depends
  on, DELETE/CONNECT, ``status``/``scale`` subresources and ``off`` namespaces
  are answered without looking at an image; a verdict for a pod spec already
  judged is reused for ``verdict_ttl`` seconds.
* **Side effects only off the hot path**: Events are recorded in the background
  and never for dry-run requests (the webhook declares
  ``sideEffects: NoneOnDryRun``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from canrun.config import MODES, WebhookSettings
from canrun.errors import CanrunError, ManifestError
from canrun.findings import Finding, Severity
from canrun.kube.admission import (
    BadAdmissionReview,
    Decision,
    Request,
    build_response,
    new_ephemeral_containers,
    parse_review,
    shorten,
    verdict_view,
)
from canrun.kube.scheduling import NodePool, platforms_for
from canrun.kube.workloads import workload_from_object
from canrun.registry.auth import Keychain, use_keychain
from canrun.registry.reference import Reference
from canrun.spec import ContainerKind, PodSpec, Resource, Workload
from canrun.validator import SKIP_ANNOTATION, Report, Validator
from canrun.webhook.metrics import Metrics

MODE_LABEL = "canrun.io/mode"
log = logging.getLogger("canrun.webhook")
decisions_log = logging.getLogger("canrun.webhook.admission")

#: Event messages and audit annotation values stay small (the API server stores them in etcd).
EVENT_MESSAGE_LIMIT = 1024
ANNOTATION_VALUE_LIMIT = 4096


class ClusterAPI(Protocol):
    """The part of ``canrun.kube.client.Cluster`` the webhook uses (all sync: called in threads).

    Optional: ``watch_pods(on_pods)`` (a started watcher with ``stop()``) lets the warm-up follow
    new pods as they appear; without it the warm-up lists pods every ``warm_interval`` seconds.
    """

    def namespace_labels(self, name: str) -> dict[str, str]: ...

    def pull_keychain(self, namespace: str, secret_names: Sequence[str], service_account: str | None) -> Keychain: ...

    def record_event(self, involved: dict[str, Any], reason: str, message: str, type: str = "Warning") -> None: ...

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None,
                     label_selector: str | None = None) -> list[dict[str, Any]]: ...


PoolSource = Callable[[], NodePool | None]


def static_pool(pool: NodePool) -> PoolSource:
    """A fixed set of node platforms (``--platform`` without a cluster): ready at once."""
    return lambda: pool


def watcher_pool(watcher: Any) -> PoolSource:
    """The NodeWatcher's pool once its first list is done (``ready`` may be an Event or a bool)."""
    def current() -> NodePool | None:
        ready = watcher.ready
        ok = ready.is_set() if hasattr(ready, "is_set") else bool(ready)
        return watcher.pool if ok else None
    return current


@dataclass
class Outcome:
    """A decision plus what the log line and the metrics say about it."""

    decision: Decision
    mode: str = "-"
    #: allowed · denied · warned · audited · skipped · unverified · error
    verdict: str = "allowed"
    rules: list[str] = field(default_factory=list)
    reason: str = ""
    cached: bool | None = None


@dataclass
class _Cached:
    expires: float
    pool: NodePool
    report: Report


@dataclass
class _Answered:
    """A shaped answer for an object seen before, reused while its verdict is (see ``AdmissionService._recall``)."""

    expires: float
    pool: NodePool
    outcome: Outcome
    report: Report
    #: The findings counters the first answer incremented, bound once.
    counters: list[Any]


class AdmissionService:
    """Answers AdmissionReviews; owns the verdict cache and the background work (events, warm-up)."""

    def __init__(self, validator: Validator, pool: PoolSource, *, settings: WebhookSettings | None = None,
                 cluster: ClusterAPI | None = None, metrics: Metrics | None = None) -> None:
        self.validator = validator
        self.pool = pool
        self.settings = settings or WebhookSettings()
        self.cluster = cluster
        self.metrics = metrics or Metrics()
        self._verdicts: OrderedDict[tuple[Any, ...], _Cached] = OrderedDict()
        self._answers: OrderedDict[tuple[Any, ...], _Answered] = OrderedDict()
        self._metric_children: dict[tuple[Any, ...], Any] = {}
        self._inflight: dict[tuple[Any, ...], asyncio.Task[Report]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._warmed: set[str] = set()
        self._warm_task: asyncio.Task[None] | None = None
        self._pod_watch: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warm_slots: asyncio.Semaphore | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Ready once the node platforms are known (the first node list, or a static set)."""
        return self.pool() is not None

    async def start(self) -> None:
        """Start indexing the images of running pods (needs a cluster): at start-up and as pods appear.

        A cluster that can watch pods (``Cluster.watch_pods``) hands over every pod at
        start-up and each new one as it is created; anything else is listed every
        ``warm_interval`` seconds.
        """
        if self.cluster is None or self.settings.warm_interval <= 0:
            return
        if self._warm_task is not None or self._pod_watch is not None:
            return
        self._loop = asyncio.get_running_loop()
        watch = getattr(self.cluster, "watch_pods", None)
        if callable(watch):
            self._pod_watch = await asyncio.to_thread(watch, self.pods_seen)
        else:
            self._warm_task = asyncio.create_task(self._warm_loop(), name="canrun-warmup")

    async def aclose(self) -> None:
        if self._pod_watch is not None:
            await asyncio.to_thread(self._pod_watch.stop)
            self._pod_watch = None
        tasks = list(self._background) + ([self._warm_task] if self._warm_task else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._warm_task = None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Run ``coro`` in the background, holding a reference until it ends (and logging its failure)."""
        task = asyncio.create_task(coro, name=name or None)
        self._background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                log.warning("background task %s failed: %s", t.get_name(), exc,
                            extra={"fields": {"error_type": type(exc).__name__}})
        task.add_done_callback(done)
        return task

    async def drain(self) -> None:
        """Wait for the background work started so far (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- the request -----------------------------------------------------------------------------

    async def review(self, body: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
        """Answer one AdmissionReview; ``BadAdmissionReview`` (HTTP 400) for anything that is not one."""
        started = time.perf_counter()
        try:
            req = parse_review(body)
        except BadAdmissionReview:
            self.metrics.bad_requests.inc()
            raise
        try:
            outcome = await self._decide(req, started)
        except Exception as exc:  # never a 500 on the write path of every workload: fail open, loudly
            log.exception("admission %s failed; allowed unverified", req.uid)
            outcome = Outcome(Decision(warnings=[f"canrun: not verified: internal error ({type(exc).__name__}); "
                                                 f"allowed"]), verdict="error", reason=type(exc).__name__)
        elapsed = time.perf_counter() - started
        self._record(req, outcome, elapsed)
        return dict(build_response(req.uid, outcome.decision))

    def _record(self, req: Request, outcome: Outcome, elapsed: float) -> None:
        self._child(self.metrics.requests, req.kind or "-", req.operation, outcome.mode, outcome.verdict).inc()
        self._child(self.metrics.latency, outcome.mode).observe(elapsed)
        fields: dict[str, Any] = {
            "uid": req.uid, "kind": req.kind, "namespace": req.namespace, "name": req.display_name.split("/")[-1],
            "operation": req.operation, "mode": outcome.mode, "verdict": outcome.verdict,
            "findings": outcome.rules, "latency_ms": round(elapsed * 1000, 2),
        }
        if req.sub_resource:
            fields["subresource"] = req.sub_resource
        if req.dry_run:
            fields["dry_run"] = True
        if outcome.reason:
            fields["reason"] = outcome.reason
        if outcome.cached is not None:
            fields["cached"] = outcome.cached
        decisions_log.info("admission %s", outcome.verdict, extra={"fields": fields})

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled metric's child, bound once (``labels()`` locks and builds tuples on every call)."""
        key = (id(metric), *labels)
        child = self._metric_children.get(key)
        if child is None:
            child = self._metric_children[key] = metric.labels(*labels)
        return child

    async def _decide(self, req: Request, started: float) -> Outcome:
        if req.operation not in ("CREATE", "UPDATE"):
            return _skip(f"operation {req.operation}")
        if req.sub_resource and req.sub_resource != "ephemeralcontainers":
            return _skip(f"subresource {req.sub_resource}")
        if req.object is None:
            return _skip("no object")
        mode = await self.mode_for(req.namespace)
        if mode == "off":
            return _skip("mode off", mode)
        view = verdict_view(req.kind, req.object)  # what a verdict depends on, read once
        if req.operation == "UPDATE" and not req.sub_resource and req.old_object is not None and \
                verdict_view(req.kind, req.old_object) == view:
            return _skip("no relevant change", mode)
        pool = self.pool()
        answer_key = None
        if pool is not None and not req.sub_resource:
            answer_key = self._answer_key(req, mode, pool, view)
            recalled = self._recall(answer_key, pool)
            if recalled is not None:
                outcome, report = recalled
                self._maybe_event(req, outcome, report, mode)
                return outcome
        try:
            workload = workload_from_object(req.object, namespace=req.namespace or None)
        except ManifestError as exc:
            return Outcome(Decision(warnings=[shorten(f"canrun: not verified: cannot read the object: {exc}")]),
                           mode, "unverified", reason="unreadable object")
        if workload is None:
            return _skip(f"kind {req.kind} has no pod spec", mode)
        workload = self._with_request_identity(workload, req)
        if req.sub_resource == "ephemeralcontainers":
            added = new_ephemeral_containers(req.old_object, req.object)
            containers = tuple(c for c in workload.pod.containers
                               if c.kind is ContainerKind.EPHEMERAL and c.name in added)
            if not containers:
                return _skip("no new ephemeral container", mode)
            workload = replace(workload, pod=replace(workload.pod, containers=containers))
        if pool is None:
            return Outcome(Decision(warnings=["canrun: not verified: node platforms are not known yet; allowed"]),
                           mode, "unverified", reason="not ready")
        remaining = self.settings.deadline - (time.perf_counter() - started)
        # the namespace too: its pull secrets decide what may be read, so one tenant's verdict is not another's
        verdict_key = (req.namespace, *_verdict_key(workload, pool))
        report, cached = await self._judge(verdict_key, workload, pool, req.namespace, remaining)
        if report is None:
            return self._unverified(workload, mode)
        outcome = self._shape(report, workload, mode)
        outcome.cached = cached
        if answer_key is not None:
            self._remember_answer(answer_key, verdict_key, outcome, report)
        self._maybe_event(req, outcome, report, mode)
        return outcome

    def _maybe_event(self, req: Request, outcome: Outcome, report: Report, mode: str) -> None:
        if outcome.rules and mode in ("warn", "audit") and not req.dry_run and self.cluster is not None \
                and self.settings.events:
            involved = _involved(req)
            if involved is not None:
                self.spawn(self._event(involved, report), name=f"event-{req.uid}")

    # -- answers for objects seen before ---------------------------------------------------------

    @staticmethod
    def _answer_key(req: Request, mode: str, pool: NodePool, view: Any) -> tuple[Any, ...]:
        """What an answer depends on, read straight off the request object.

        A GitOps controller re-applies the same objects all day; turning each into a
        ``Workload`` and shaping the same findings into the same messages again was most
        of a warm admission's cost.  The key is the object's identity (it is named in the
        messages), the mode, the node pool and ``verdict_view`` (the relevant pod spec and
        the exemptions) as written: a reordered but equal object only misses.
        """
        return (req.kind, req.namespace, req.display_name, mode, id(pool), repr(view))

    def _recall(self, key: tuple[Any, ...], pool: NodePool) -> tuple[Outcome, Report] | None:
        hit = self._answers.get(key)
        if hit is None or hit.pool is not pool or hit.expires <= time.monotonic():
            return None
        self._answers.move_to_end(key)
        self._child(self.metrics.cache, "hit").inc()
        for counter in hit.counters:
            counter.inc()
        return replace(hit.outcome, cached=True), hit.report

    def _remember_answer(self, key: tuple[Any, ...], verdict_key: tuple[Any, ...], outcome: Outcome,
                         report: Report) -> None:
        """Keep the shaped answer as long as the verdict it was shaped from (only remembered verdicts)."""
        verdict = self._verdicts.get(verdict_key)
        if verdict is None:  # not a verdict worth remembering (an unreadable image): ask again next time
            return
        counters = [self._child(self.metrics.findings, f.rule, f.severity.value)
                    for f in report.findings if f.severity is not Severity.INFO]
        self._answers[key] = _Answered(verdict.expires, verdict.pool, outcome, report, counters)
        while len(self._answers) > self.settings.verdict_cache_size:
            self._answers.popitem(last=False)

    async def mode_for(self, namespace: str) -> str:
        """The namespace's ``canrun.io/mode`` label, else the default (also when the API cannot say)."""
        default = self.settings.default_mode
        if self.cluster is None or not namespace:
            return default
        try:
            labels = await asyncio.to_thread(self.cluster.namespace_labels, namespace)
        except CanrunError as exc:
            log.warning("namespace %s labels unavailable (%s); using mode %s", namespace, exc, default)
            return default
        mode = (labels or {}).get(MODE_LABEL)
        if mode is None:
            return default
        if mode not in MODES:
            log.warning("namespace %s has %s=%r (not one of %s); using mode %s", namespace, MODE_LABEL, mode,
                        ", ".join(MODES), default)
            return default
        return mode

    @staticmethod
    def _with_request_identity(workload: Workload, req: Request) -> Workload:
        """Objects in a CREATE may lack their namespace (and name, with generateName): take them from the request."""
        res = workload.resource
        namespace = res.namespace or req.namespace or None
        name = res.name or req.display_name.split("/")[-1]
        if namespace == res.namespace and name == res.name:
            return workload
        return replace(workload, resource=Resource(res.kind, name, namespace, res.api_version))

    # -- judging ---------------------------------------------------------------------------------

    async def _judge(self, key: tuple[Any, ...], workload: Workload, pool: NodePool, namespace: str,
                     remaining: float) -> tuple[Report | None, bool]:
        """The report for a workload within ``remaining`` seconds (None if not in time), and whether it was cached."""
        now = time.monotonic()
        hit = self._verdicts.get(key)
        if hit is not None and hit.pool is pool and hit.expires > now:
            self._verdicts.move_to_end(key)
            self._child(self.metrics.cache, "hit").inc()
            return _restamp(hit.report, workload.resource), True
        self._child(self.metrics.cache, "miss").inc()
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._validate(workload, pool, namespace), name="canrun-validate")
            self._inflight[key] = task
            self._background.add(task)
            task.add_done_callback(lambda t: self._validated(key, pool, t))
        if remaining > 0:
            done, _ = await asyncio.wait({task}, timeout=remaining)
        else:
            done = set()
        if not done:
            self.metrics.deadline.inc()
            return None, False
        return _restamp(task.result(), workload.resource), False

    async def _validate(self, workload: Workload, pool: NodePool, namespace: str) -> Report:
        keychain = await self._keychain(namespace, workload.pod)
        with use_keychain(keychain):
            return await self.validator.check([workload], pool)

    def _validated(self, key: tuple[Any, ...], pool: NodePool, task: asyncio.Task[Report]) -> None:
        self._inflight.pop(key, None)
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, CanrunError):
                log.error("validation failed: %s: %s", type(exc).__name__, exc)
            return
        report = task.result()
        if any(f.rule == "image-unresolvable" for f in report.findings + report.suppressed):
            return  # a registry hiccup is not a verdict worth remembering
        self._verdicts[key] = _Cached(time.monotonic() + self.settings.verdict_ttl, pool, report)
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self.settings.verdict_cache_size:
            self._verdicts.popitem(last=False)

    async def _keychain(self, namespace: str, pod: PodSpec) -> Keychain | None:
        """The pod's pull credentials (its imagePullSecrets and its ServiceAccount's), never logged."""
        if self.cluster is None or not namespace:
            return None
        try:
            return await asyncio.to_thread(self.cluster.pull_keychain, namespace, list(pod.image_pull_secrets),
                                           pod.service_account)
        except CanrunError as exc:
            log.warning("pull secrets of namespace %s unavailable: %s", namespace, exc)
            return None

    # -- shaping the answer ----------------------------------------------------------------------

    def _unverified(self, workload: Workload, mode: str) -> Outcome:
        images = sorted({c.image for c in workload.pod.containers})
        secs = f"{self.settings.deadline:g}s"
        text = (f"canrun: not verified within {secs}: {', '.join(images)} (still checking in the background; "
                f"a retry gets the verdict)")
        annotations = {"unverified": f"deadline {secs}: {', '.join(images)}"[:ANNOTATION_VALUE_LIMIT]}
        if mode == "enforce" and self.settings.strict:
            return Outcome(Decision(allowed=False, code=403, message=text + "; denied because strict is set",
                                    audit_annotations=annotations), mode, "denied", reason="deadline")
        warnings = [shorten(text)] if mode in ("enforce", "warn") else []
        return Outcome(Decision(warnings=warnings, audit_annotations=annotations), mode, "unverified",
                       reason="deadline")

    def _shape(self, report: Report, workload: Workload, mode: str) -> Outcome:
        shown = [f for f in report.findings if f.severity is not Severity.INFO]
        errors = [f for f in shown if f.severity is Severity.ERROR]
        others = [f for f in shown if f.severity is not Severity.ERROR]
        for f in shown:
            self._child(self.metrics.findings, f.rule, f.severity.value).inc()
        rules = sorted({f.rule for f in shown})
        exempt_value = workload.annotations.get(SKIP_ANNOTATION, "")
        exempted = sorted({f"{f.rule} ({f.container})" if f.container else f.rule for f in report.suppressed})
        annotations: dict[str, str] = {}
        if shown:
            annotations["findings"] = _findings_annotation(shown)
        if exempted:
            annotations["exempted"] = shorten(f"{SKIP_ANNOTATION}={exempt_value}: {', '.join(exempted)}",
                                              ANNOTATION_VALUE_LIMIT)
        exemption_warnings = ([shorten(f"canrun: exempted by {SKIP_ANNOTATION}={exempt_value}: {e}")
                               for e in exempted])
        exemption_warnings += ssrf_remedies(shown)
        if mode == "enforce":
            if errors:
                return Outcome(Decision(allowed=False, code=403, message=deny_message(workload, errors),
                                        warnings=[warning_line(f) for f in others] + exemption_warnings,
                                        audit_annotations=annotations), mode, "denied", rules)
            warnings = [warning_line(f) for f in others] + exemption_warnings
            return Outcome(Decision(warnings=warnings, audit_annotations=annotations), mode,
                           "warned" if others else "allowed", rules)
        if mode == "warn":
            warnings = [warning_line(f) for f in errors + others] + exemption_warnings
            return Outcome(Decision(warnings=warnings, audit_annotations=annotations), mode,
                           "warned" if shown else "allowed", rules)
        # audit: nothing the user sees at apply time; the audit log, metrics, the log line and an Event
        return Outcome(Decision(audit_annotations=annotations), mode, "audited" if shown else "allowed", rules)

    async def _event(self, involved: dict[str, Any], report: Report) -> None:
        assert self.cluster is not None
        shown = [f for f in report.findings if f.severity is not Severity.INFO]
        errors = any(f.severity is Severity.ERROR for f in shown)
        reason = "ContainerCannotRun" if errors else "ImageNotVerified"
        parts = [f"{f.rule}: container {f.container}" + (f" ({f.platform})" if f.platform else "") + f": {f.message}"
                 for f in shown]
        message = shorten(f"canrun: {len(shown)} finding(s): " + "; ".join(parts), EVENT_MESSAGE_LIMIT)
        try:
            await asyncio.to_thread(self.cluster.record_event, involved, reason, message, "Warning")
        except CanrunError as exc:
            self.metrics.events.labels("failed").inc()
            log.warning("could not record an event on %s %s/%s: %s", involved.get("kind"),
                        involved.get("namespace"), involved.get("name"), exc)
            return
        self.metrics.events.labels("recorded").inc()

    # -- warm-up ---------------------------------------------------------------------------------

    async def _warm_loop(self) -> None:
        while True:
            try:
                await self.warm_once()
            except CanrunError as exc:
                log.warning("warm-up: %s", exc)
            except Exception:  # keep the webhook up whatever the warm-up hits
                log.exception("warm-up failed")
            await asyncio.sleep(self.settings.warm_interval)

    async def warm_once(self, *, wait_ready: float = 30.0) -> int:
        """Index the images of the pods running in the cluster (those not seen yet); returns how many were new."""
        if self.cluster is None:
            return 0
        pods = await asyncio.to_thread(self.cluster.list_objects, "v1", "Pod")
        return await self.warm_pods(pods, wait_ready=wait_ready)

    def pods_seen(self, pods: list[dict[str, Any]]) -> None:
        """The pod watch's callback (on its thread): index the images of these pods in the background."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(lambda: self.spawn(self.warm_pods(pods), name="canrun-warmup"))
        except RuntimeError:
            pass  # the loop closed between the check and the call: shutting down

    async def warm_pods(self, pods: Sequence[Mapping[str, Any]], *, wait_ready: float = 30.0) -> int:
        """Index the images of ``pods`` not indexed yet, at most ``warm_concurrency`` at a time; how many were new."""
        work: dict[str, tuple[str, Workload]] = {}
        for obj in pods:
            try:
                workload = workload_from_object(dict(obj))
            except ManifestError:
                continue
            if workload is None:
                continue
            for c in workload.pod.containers:
                if c.image not in self._warmed and c.image not in work:
                    work[c.image] = (workload.resource.namespace or "", workload)
        if not work:
            return 0
        self._warmed.update(work)  # claimed now, so a burst of pods with one image warms it once
        waited = 0.0
        while (pool := self.pool()) is None and waited < wait_ready:
            await asyncio.sleep(0.2)
            waited += 0.2
        if pool is None:
            self._warmed.difference_update(work)
            return 0
        if self._warm_slots is None:
            self._warm_slots = asyncio.Semaphore(max(1, self.settings.warm_concurrency))
        slots = self._warm_slots

        async def one(image: str, namespace: str, workload: Workload) -> None:
            async with slots:
                keychain = await self._keychain(namespace, workload.pod)
                outcome = "indexed"
                try:
                    with use_keychain(keychain):
                        ref = Reference.parse(image)
                        for platform in platforms_for(workload.pod, pool).platforms:
                            selection = await self.validator.store.select(ref, platform)
                            if selection.descriptor is not None:
                                await self.validator.store.view(selection)
                except CanrunError as exc:
                    outcome = "failed"
                    log.info("warm-up: %s not indexed: %s", image, exc)
                self.metrics.warmed.labels(outcome).inc()

        await asyncio.gather(*(one(image, ns, wl) for image, (ns, wl) in work.items()))
        log.info("warm-up: indexed %d new image(s) of running pods", len(work))
        return len(work)


# -- helpers ----------------------------------------------------------------------------------------

def _skip(reason: str, mode: str = "-") -> Outcome:
    return Outcome(Decision(), mode, "skipped", reason=reason)


def _verdict_key(workload: Workload, pool: NodePool) -> tuple[Any, ...]:
    """Everything a verdict depends on: the pod spec, the exemptions, the node pool (by identity)."""
    return (repr(workload.pod), workload.annotations.get(SKIP_ANNOTATION, ""), id(pool))


def _restamp(report: Report, resource: Resource) -> Report:
    """A cached report, its findings naming the object being admitted now."""
    if all(f.resource == resource for f in report.findings + report.suppressed):
        return report
    return Report(findings=[replace(f, resource=resource) for f in report.findings],
                  suppressed=[replace(f, resource=resource) for f in report.suppressed],
                  workloads=report.workloads, containers=report.containers, images=set(report.images))


def finding_line(f: Finding) -> str:
    """One terminal line: container, platform, rule, evidence, fix."""
    where = f'container "{f.container}"' if f.container else "pod"
    if f.platform:
        where += f" on {f.platform}"
    # one line whatever the evidence holds (a command may contain a newline): the terminal shows one per finding
    return " ".join(f"- {where}: {f.rule}: {f.message} (fix: {f.hint})".split())


def ssrf_remedies(findings: Sequence[Finding]) -> list[str]:
    """One warning per registry host the SSRF guard refused, saying how to allow it.

    The finding's own warning line is cut at 120 characters, before the remedy;
    the person who sees the warning must still learn the one flag that changes it.
    """
    hosts = dict.fromkeys(str(f.evidence["registry"]) for f in findings
                          if f.evidence.get("refused_by") == "ssrf-guard" and f.evidence.get("registry"))
    return [shorten(f"canrun: --allow-registry-host {h} lets canrun read this registry (its SSRF guard refused it)")
            for h in hosts]


def deny_message(workload: Workload, errors: Sequence[Finding]) -> str:
    head = f"canrun: {workload.resource} would fail to start ({len(errors)} finding(s)):"
    return "\n".join([head] + [finding_line(f) for f in errors])


def warning_line(f: Finding) -> str:
    """A self-contained kubectl warning of at most 120 characters."""
    where = f'container "{f.container}"' if f.container else "pod"
    platform = f" [{f.platform}]" if f.platform else ""
    return shorten(f"canrun {f.rule}: {where}{platform}: {f.message}")


def _findings_annotation(findings: Sequence[Finding]) -> str:
    items: list[dict[str, Any]] = []
    for f in findings:
        item = {"rule": f.rule, "severity": f.severity.value, "container": f.container, "platform": f.platform,
                "message": f.message}
        candidate = json.dumps(items + [item], separators=(",", ":"))
        if len(candidate) > ANNOTATION_VALUE_LIMIT - 40:
            items.append({"more": len(findings) - len(items)})
            break
        items.append(item)
    return json.dumps(items, separators=(",", ":"))


def _involved(req: Request) -> dict[str, Any] | None:
    obj = req.object or {}
    meta = obj.get("metadata") or {}
    name = req.name or meta.get("name")
    if not name:
        return None  # generateName before the name is set: nothing an Event can point at
    api_version = obj.get("apiVersion") or (f"{req.group}/{req.version}" if req.group else req.version)
    involved = {"apiVersion": api_version, "kind": req.kind, "namespace": req.namespace or meta.get("namespace"),
                "name": name}
    if meta.get("uid"):
        involved["uid"] = meta["uid"]
    return involved

"""From a reference to a judged-ready image view, reading each byte at most once.

The store is where the registry, the layer indexer and the caches meet:

* a tag is resolved to a digest with a HEAD (free on Docker Hub) and remembered
  for a short TTL; everything below is keyed by digest and so cached forever;
* manifests and configs are small: kept in memory and on disk;
* layers are streamed, indexed and dropped (zstd:chunked and eStargz layers are
  indexed from their table of contents instead, ``lazy.py``); only their ``LayerIndex`` is kept,
  on disk by layer digest, so a base layer shared by fifty images is read once;
* the merged filesystem of a platform manifest is kept on disk by manifest
  digest, so a warm check loads one view file (decoded lazily) and no layer
  index at all; it is saved only after every check on the manifest, its
  config and its layers passed, and a manifest digest fixes its layers;
* concurrent requests for the same digest share one in-flight task
  (single-flight), which is what lets the webhook answer a burst of identical
  admissions with one registry round trip;
* the layers of one image are fetched and indexed concurrently, bounded by
  slots per registry so a 40-layer image does not open 40 connections and a
  slow registry holds only its own slots, never another registry's;
* every image read has a total deadline (``image_deadline``, tightened for a
  block of work with ``read_deadline``): reading past it is cancelled, slot
  and connection released, and work nobody waits for any more (one layer
  failed, so its siblings are of no use to this image) is cancelled and awaited.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from canrun import untrusted_json
from canrun.errors import ImageCorrupt, LimitExceeded, UnsupportedManifest
from canrun.image.cache import Cache
from canrun.image.fs import MergedFS
from canrun.image.layout import OVERLAYFS, SNAPSHOTTERS
from canrun.image.lazy import is_lazy, lazy_index
from canrun.image.walk import RootView
from canrun.image.layer import index_layer
from canrun.image.limits import Limits
from canrun.image.manifest import (ImageIndex, ImageManifest, flatten, layer_compression, parse_manifest,
                                   select_manifest)
from canrun.image.model import ImageConfig, LayerIndex
from canrun.platform import Platform
from canrun.registry.auth import current_keychain
from canrun.registry.base import Descriptor, RegistryBackend
from canrun.registry.reference import Reference

T = TypeVar("T")

#: How deep canrun follows indexes nested in indexes (real images nest at most once).
MAX_INDEX_DEPTH = 4

#: Seconds a request identity's access to a repository stays confirmed (see ImageStore._confirm_access).
ACCESS_TTL = 60.0

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("canrun_read_deadline", default=None)


@contextmanager
def read_deadline(seconds: float) -> Iterator[None]:
    """Within the block (and tasks started in it), images are read within ``seconds`` (or the store's own
    ``image_deadline`` if that is shorter): the webhook ties it to its budget."""
    token = _deadline.set(seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def default_layer_concurrency() -> int:
    """One layer per core, at least 2, at most 4 (docker pulls 3 at a time).

    Indexing a layer is inflate-bound, so on a registry close by, more layers
    than cores only share the cores: the largest layer then finishes last and
    late (bench/bench_engine.py shows it).  Over a slow link the
    network is the limit and a few connections more would help; 2 to 4 is the
    compromise.  Layers start biggest first, so the longest one never waits.
    """
    return max(2, min(4, os.cpu_count() or 2))


@dataclass(frozen=True)
class ResolvedImage:
    """What a reference points at: an index of platform manifests, or one image manifest."""

    reference: Reference
    descriptor: Descriptor
    index: ImageIndex | None
    manifest: ImageManifest | None

    @property
    def platforms(self) -> list[Platform]:
        if self.index is None:
            return []
        return [d.platform for d in self.index.images() if d.platform is not None]


@dataclass
class ImageView:
    """One platform's image, ready to be judged: its config and merged filesystem.

    ``layers`` is empty when the merged filesystem came from the view cache;
    ``layer_digests`` always lists the manifest's layers.
    """

    reference: Reference
    digest: str  # the platform manifest's digest
    index_digest: str | None
    config: ImageConfig
    layers: list[LayerIndex]
    layer_digests: list[str] = field(default_factory=list)
    _fs: RootView | None = None
    snapshotter: str = OVERLAYFS

    @property
    def platform(self) -> Platform | None:
        return self.config.platform

    @property
    def fs(self) -> RootView:
        if self._fs is None:
            self._fs = MergedFS.from_layers(self.layers, self.snapshotter)
        return self._fs


@dataclass(frozen=True)
class Selection:
    """The manifest a node of ``node`` would pull for a reference, or why there is none."""

    resolved: ResolvedImage
    node: Platform
    descriptor: Descriptor | None  # None: the index has no entry this node accepts
    single_platform: bool  # not an index: containerd pulls it whatever its platform
    #: For an index entry without a platform: the platform its image config gives (what containerd matched).
    config_platform: Platform | None = None


async def _cancel_and_wait(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until they ended, their errors retrieved (no "exception never retrieved")."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    for task in tasks:
        if not task.cancelled():
            task.exception()


class _SingleFlight:
    """Share one in-flight coroutine per key between concurrent callers; cancel it once nobody waits."""

    def __init__(self) -> None:
        self._tasks: dict[Any, asyncio.Task[Any]] = {}
        self._waiting: dict[asyncio.Task[Any], int] = {}

    async def run(self, key: Any, make: Callable[[], Awaitable[T]]) -> T:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._tasks[key] = task
            task.add_done_callback(lambda _t, k=key: self._tasks.pop(k, None))
        self._waiting[task] = self._waiting.get(task, 0) + 1
        try:
            # shield: one caller giving up must not cancel the work others still wait for
            return await asyncio.shield(task)
        finally:
            left = self._waiting[task] = self._waiting[task] - 1
            if left == 0:
                del self._waiting[task]
                if not task.done():  # the last waiter left (cancelled): nobody will use the result
                    await _cancel_and_wait([task])

    async def aclose(self) -> None:
        await _cancel_and_wait(list(self._tasks.values()))


class ImageStore:
    """Resolve references and build image views through the registry backend and the caches."""

    def __init__(self, backend: RegistryBackend, *, cache: Cache | None = None, limits: Limits | None = None,
                 layer_concurrency: int | None = None, memory_views: int = 64,
                 image_deadline: float | None = None, snapshotter: str = OVERLAYFS) -> None:
        if snapshotter not in SNAPSHOTTERS:
            raise ValueError(f"unknown snapshotter {snapshotter!r}: expected one of {', '.join(SNAPSHOTTERS)}")
        self.backend = backend
        #: How the node lays the layers out (``image/layout.py``): decides the merge rules and the view cache key.
        self.snapshotter = snapshotter
        self.cache = cache
        self.limits = limits or Limits()
        #: Seconds to read one image in (resolve, manifests, config, layers); ``read_deadline`` may tighten it.
        self.image_deadline = image_deadline if image_deadline is not None else self.limits.max_seconds
        self._flight = _SingleFlight()
        self._concurrency = layer_concurrency or default_layer_concurrency()
        #: layer slots per registry host: a registry that drips holds only its own
        self._layer_slots: dict[str, asyncio.Semaphore] = {}
        self._views: OrderedDict[str, ImageView] = OrderedDict()
        self._memory_views = memory_views
        self._layers: OrderedDict[str, LayerIndex] = OrderedDict()
        self.stats = {"layers_fetched": 0, "layers_cached": 0, "layers_lazy": 0, "manifests_fetched": 0,
                      "views_cached": 0}
        #: (registry, repository, credential fingerprint) -> until when that identity's access is confirmed.
        self._access: dict[tuple[str, str, str], float] = {}

    # -- references ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel and await every read still in flight (before the backend they use is closed)."""
        await self._flight.aclose()

    def _seconds(self) -> float:
        override = _deadline.get()
        return self.image_deadline if override is None else min(override, self.image_deadline)

    async def _within_deadline(self, ref: Reference, work: Callable[[], Awaitable[T]]) -> T:
        seconds = self._seconds()
        try:
            async with asyncio.timeout(seconds):
                return await work()
        except TimeoutError as exc:
            raise LimitExceeded(f"{ref}: not read within {seconds:g}s (the deadline for reading one image)") \
                from exc

    async def resolve(self, ref: Reference) -> ResolvedImage:
        async def work() -> ResolvedImage:
            await self._confirm_access(ref)
            return await self._flight.run(("resolve", str(ref)), lambda: self._resolve(ref))
        return await self._within_deadline(ref, work)

    async def _confirm_access(self, ref: Reference) -> None:
        """Under a request keychain (the webhook's per-pod pull secrets), prove this identity may read the repository.

        Everything below is cached by tag or digest, not by who asked: without this
        check a pod with no pull secret (in any namespace, even a dry run) would be
        judged from what another tenant's secret fetched, learning what a private
        image contains.  The kubelet re-checks credentials for cached images the
        same way.  One registry round trip per (repository, credential) per
        ``ACCESS_TTL``; the CLI and the audit (one identity) skip it.
        """
        keychain = current_keychain()
        if keychain is None:
            return
        cred = await asyncio.to_thread(keychain.lookup, ref.registry) if keychain.needs_subprocess \
            else keychain.lookup(ref.registry)
        key = (ref.registry, ref.repository, cred.fingerprint if cred is not None else "")
        now = time.monotonic()
        if self._access.get(key, 0.0) > now:
            return

        async def check() -> None:
            if ref.digest is None:
                await self.backend.resolve(ref)  # a HEAD with this identity's credentials
            else:
                await self.backend.manifest(ref, ref.digest)
            self._access[key] = time.monotonic() + ACCESS_TTL
            while len(self._access) > 4096:
                self._access.pop(next(iter(self._access)))

        await self._flight.run(("access", *key), check)

    async def _resolve(self, ref: Reference) -> ResolvedImage:
        descriptor = await self._top_descriptor(ref)
        body = await self._manifest_body(ref, descriptor)
        parsed = parse_manifest(descriptor, body)
        if isinstance(parsed, ImageIndex):
            return ResolvedImage(ref, descriptor, await self._flatten(ref, parsed, MAX_INDEX_DEPTH, {}), None)
        return ResolvedImage(ref, descriptor, None, parsed)

    async def _flatten(self, ref: Reference, index: ImageIndex, depth: int,
                       memo: dict[str, ImageIndex]) -> ImageIndex:
        """Fold indexes nested in ``index`` into it, as containerd walks them when it pulls.

        Nested indexes are content-addressed: each distinct one is fetched and
        flattened once per reference (``memo``, by digest), and at most
        ``limits.max_index_documents`` of them are read.
        """
        nested = index.nested()
        if not nested:
            return index
        if depth <= 0:
            raise LimitExceeded(f"{ref}: indexes nested more than {MAX_INDEX_DEPTH} deep")
        children: dict[str, ImageIndex] = {}
        for entry in nested:
            if entry.digest in children:
                continue
            flat = memo.get(entry.digest)
            if flat is None:
                if len(memo) >= self.limits.max_index_documents:
                    raise LimitExceeded(f"{ref}: the index names more than {self.limits.max_index_documents} "
                                        f"nested indexes")
                child = parse_manifest(entry, await self._manifest_body(ref, entry))
                if not isinstance(child, ImageIndex):
                    raise UnsupportedManifest(f"{ref}: index entry {entry.digest} says it is an index but is not one")
                flat = memo[entry.digest] = await self._flatten(ref, child, depth - 1, memo)
            children[entry.digest] = flat
        return flatten(index, children, max_entries=self.limits.max_index_entries)

    async def _top_descriptor(self, ref: Reference) -> Descriptor:
        key = f"{ref.registry}/{ref.repository}:{ref.tag}"
        if ref.digest is None and self.cache is not None:
            hit = await self._cache_read(self.cache.get_tag, key)
            if hit is not None:
                digest, media_type = hit
                return Descriptor(media_type=media_type, digest=digest, size=-1)
        descriptor = await self.backend.resolve(ref)
        if ref.digest is None and self.cache is not None:
            self.cache.put_tag(key, descriptor.digest, descriptor.media_type)
        return descriptor

    async def _cache_read(self, read: Callable[[str], T], key: str) -> T:
        """A small cache read: inline from the local disk, off the event loop when a shared store may be asked."""
        if self.cache is not None and self.cache.shared is not None:
            return await asyncio.to_thread(read, key)
        return read(key)

    async def _manifest_body(self, ref: Reference, descriptor: Descriptor) -> bytes:
        if self.cache is not None:
            cached = await self._cache_read(self.cache.get_blob, descriptor.digest)
            if cached is not None:
                return cached
        fetched, body = await self.backend.manifest(ref, descriptor.digest)
        self.stats["manifests_fetched"] += 1
        if self.cache is not None:
            self.cache.put_blob(fetched.digest, body)
        return body

    async def select(self, ref: Reference, node: Platform, *, exact: bool = False) -> Selection:
        """The manifest a node of ``node`` pulls; ``exact``: containerd 2.1+'s transfer service matching."""
        resolved = await self.resolve(ref)
        if resolved.index is None:
            return Selection(resolved, node, resolved.descriptor, single_platform=True)
        chosen = select_manifest(resolved.index, node, exact=exact)
        if chosen is not None and chosen.platform is None:
            # containerd's images.Manifest: an entry without a platform is judged by its image config's
            config_platform = await self._entry_platform(ref, chosen)
            if node.match_rank(config_platform, exact=exact) is None:
                return Selection(resolved, node, None, single_platform=False, config_platform=config_platform)
            return Selection(resolved, node, chosen, single_platform=False, config_platform=config_platform)
        return Selection(resolved, node, chosen, single_platform=False)

    async def _entry_platform(self, ref: Reference, entry: Descriptor) -> Platform:
        """The platform an index entry without one has: the os/architecture/variant of its image config."""
        parsed = parse_manifest(entry, await self._manifest_body(ref, entry))
        if not isinstance(parsed, ImageManifest):
            raise UnsupportedManifest(f"{ref}: index entry {entry.digest} is not an image manifest")
        doc = _config_doc(ref, parsed.config, await self._config_blob(ref, parsed.config))
        return Platform.from_dict(doc)

    # -- views --------------------------------------------------------------------------------

    async def view(self, selection: Selection) -> ImageView:
        """The view of the manifest a selection names (which must not be None)."""
        if selection.descriptor is None:
            raise UnsupportedManifest(f"{selection.resolved.reference} has no image for {selection.node}")
        digest = selection.descriptor.digest
        cached = self._views.get(digest)
        if cached is not None:
            self._views.move_to_end(digest)
            return cached
        view = await self._within_deadline(selection.resolved.reference, lambda: self._flight.run(
            ("view", digest), lambda: self._build_view(selection)))
        self._views[digest] = view
        while len(self._views) > self._memory_views:
            self._views.popitem(last=False)
        return view

    async def _build_view(self, selection: Selection) -> ImageView:
        ref = selection.resolved.reference
        descriptor = selection.descriptor
        assert descriptor is not None
        if selection.resolved.manifest is not None and descriptor.digest == selection.resolved.descriptor.digest:
            manifest = selection.resolved.manifest
        else:
            parsed = parse_manifest(descriptor, await self._manifest_body(ref, descriptor))
            if not isinstance(parsed, ImageManifest):
                raise UnsupportedManifest(f"{ref}: index entry {descriptor.digest} is not an image manifest")
            manifest = parsed
        if len(manifest.layers) > self.limits.max_layers:
            raise LimitExceeded(f"{ref}: the manifest lists {len(manifest.layers)} layers, more than the "
                                f"{self.limits.max_layers} canrun reads (overlayfs stacks at most 500)")
        config_doc = _config_doc(ref, manifest.config, await self._config_blob(ref, manifest.config))
        config = ImageConfig.from_json(config_doc)
        index_digest = None if selection.single_platform else selection.resolved.descriptor.digest
        layer_digests = [d.digest for d in manifest.layers]
        if self.cache is not None:
            # A view is saved only after the layer checks below passed for this very manifest digest,
            # which fixes every layer descriptor (digest and size): serving it skips nothing.
            fs = await asyncio.to_thread(self.cache.get_view, descriptor.digest, self.snapshotter)
            if fs is not None and fs.layer_digests == layer_digests:
                self.stats["views_cached"] += 1
                return ImageView(ref, descriptor.digest, index_digest, config, [], layer_digests, fs, self.snapshotter)
            if fs is not None:
                self.cache.discard_view(descriptor.digest, self.snapshotter)
        # Biggest first: with more layers than slots, the layer that takes longest starts at once.
        order = sorted(range(len(manifest.layers)), key=lambda i: -manifest.layers[i].size)
        tasks = [asyncio.ensure_future(self._layer(ref, manifest.layers[i])) for i in order]
        try:
            fetched = await asyncio.gather(*tasks)
        except BaseException:
            await _cancel_and_wait(tasks)  # one layer failed: the others are no use to this image
            raise
        layers = [index for _, index in sorted(zip(order, fetched))]
        # Merged here, off the event loop, so a layer the snapshotter cannot unpack fails the view (ImageCorrupt).
        merged = await asyncio.to_thread(MergedFS.from_layers, layers, self.snapshotter)
        view = ImageView(ref, descriptor.digest, index_digest, config, layers, layer_digests, merged, self.snapshotter)
        if self.cache is not None:
            await asyncio.to_thread(self.cache.put_view, descriptor.digest, merged, self.snapshotter)
        return view

    async def _config_blob(self, ref: Reference, descriptor: Descriptor) -> bytes:
        if self.cache is not None:
            cached = await self._cache_read(self.cache.get_blob, descriptor.digest)
            if cached is not None:
                return cached
        body = await self.backend.blob(ref, descriptor.digest, max_size=self.limits.max_config_bytes)
        if self.cache is not None:
            self.cache.put_blob(descriptor.digest, body)
        return body

    async def _layer(self, ref: Reference, descriptor: Descriptor) -> LayerIndex:
        index = self._layers.get(descriptor.digest)
        if index is None:
            index = await self._flight.run(("layer", descriptor.digest, descriptor.size),
                                          lambda: self._fetch_layer(ref, descriptor))
            self._layers[descriptor.digest] = index
            while len(self._layers) > 4 * self._memory_views:
                self._layers.popitem(last=False)
        if descriptor.size >= 0 and index.size >= 0 and index.size != descriptor.size:
            # The blob is right (its digest matched when it was read) but this manifest misstates its size;
            # containerd refuses it on a node that does not hold the layer yet ("unexpected commit size").
            raise ImageCorrupt(f"{ref}: layer {descriptor.digest} is {index.size} bytes but the manifest gives its "
                               f"size as {descriptor.size}")
        return index

    async def _fetch_layer(self, ref: Reference, descriptor: Descriptor) -> LayerIndex:
        if self.cache is not None:
            cached = await asyncio.to_thread(self.cache.get_layer, descriptor.digest)
            if cached is not None:
                self.stats["layers_cached"] += 1
                return cached
        compression = layer_compression(descriptor.media_type)
        slots = self._layer_slots.setdefault(ref.registry, asyncio.Semaphore(self._concurrency))
        async with slots:
            # zstd:chunked / eStargz: the table of contents and a few verified chunks, or None -> the stream.
            index = await lazy_index(self.backend, ref, descriptor, self.limits) if is_lazy(descriptor) else None
            if index is not None:
                self.stats["layers_lazy"] += 1
            else:
                async with self.backend.stream_blob(ref, descriptor.digest, descriptor.size) as chunks:
                    index = await index_layer(chunks, digest=descriptor.digest, compression=compression,
                                              limits=self.limits)
        if descriptor.size >= 0:
            index.size = descriptor.size  # the registry client checked the body against it (and the digest)
        self.stats["layers_fetched"] += 1
        if self.cache is not None:
            await asyncio.to_thread(self.cache.put_layer, index)
        return index


def _config_doc(ref: Reference, descriptor: Descriptor, body: bytes) -> dict[str, Any]:
    """An image config blob as a JSON object, checked against its descriptor's size."""
    if descriptor.size >= 0 and len(body) != descriptor.size:
        # containerd refuses a blob whose size differs from its descriptor ("unexpected commit size")
        raise ImageCorrupt(f"{ref}: the image config {descriptor.digest} is {len(body)} bytes but "
                           f"the manifest gives its size as {descriptor.size}")
    try:
        doc = untrusted_json.loads(body)
    except ValueError as exc:
        raise ImageCorrupt(f"{ref}: the image config {descriptor.digest} is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise ImageCorrupt(f"{ref}: the image config {descriptor.digest} is not a JSON object")
    return doc

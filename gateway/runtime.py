"""The gateway's request path inside one ingress replica, free of HTTP and Ray types.

:class:`GatewayRuntime` picks the variant (``gateway.core.routing.choose_variant``), calls it (colocated
ONNX Runtime inline, anything else through an async caller such as a Ray Serve handle),
falls back to the teacher when a student fails, and queues shadow comparisons. Config
changes build a new immutable :class:`_State` and swap it in one assignment, so a request
that started under the old config finishes under it: no restart, no failed request.

Example::

    runtime = GatewayRuntime(remote_callers={"teacher": call_teacher}, metrics=None)
    runtime.apply(config_dict, actor="serve-deploy")
    answer = await runtime.answer(x, headers={"x-user-id": "42"})
"""
from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from gateway.backends import OnnxBackend, build_backend
from gateway.core.compare import compare_outputs
from gateway.core.config import GatewayConfig, diff_config, load_gateway_config
from gateway.core.errors import BackendError, BackendTimeout, GatewayConfigError, InvalidInput, ManifestError, NotFound
from gateway.core.manifest import read_manifest
from gateway.core.routing import choose_variant, should_sample
from gateway.core.stats import PRIMARY, SHADOW
from gateway.model_store import local_manifest
from gateway.request_context import add_model_time, after_response
from gateway.shadow import ShadowBatcher, ShadowQueue
from gateway.text import TextBatch, TextModels, load_text_models

log = logging.getLogger(__name__)

RemoteCaller = Callable[[np.ndarray], Awaitable[np.ndarray]]
SHADOW_WORKERS = 2
# A colocated teacher expected to answer faster than this runs inline: a thread hand-off costs
# about as much here (a 40 us teacher was 1.20-1.27x the bare app's p50 through its thread).
INLINE_MAX_S = 200e-6


@dataclass(frozen=True)
class _ShadowItem:
    """One request's share of a shadow batch: its rows, the primary's answer, the config it ran under."""

    state: "_State"
    x: np.ndarray | TextBatch
    y: np.ndarray
    request_id: str


@dataclass(frozen=True)
class Answer:
    """What the caller gets: the output, who produced it, and whether it was a fallback."""

    y: np.ndarray
    variant: str
    version: str
    fallback: bool = False


@dataclass(frozen=True)
class _State:
    """One config and what it needs (local backends, weights); never mutated."""

    config: GatewayConfig
    local: Mapping[str, OnnxBackend]
    weights: Mapping[str, float]
    student_weights: Mapping[str, float]
    versions: Mapping[str, str] = field(default_factory=dict)
    input_shape: list[int] | None = None
    output_shape: list[int] | None = None
    text: TextModels | None = None  # the variants' tokenizers when the models take text
    teacher: str = ""               # the teacher's name (read on every request: no search of the variants)


class GatewayRuntime:
    """Routing, fallback and shadow for one replica; see the module docstring."""

    def __init__(self, *, remote_callers: Mapping[str, RemoteCaller], observers):
        self._remote = dict(remote_callers)
        self._obs = observers
        self._state: _State | None = None
        self._shadow = ShadowQueue(queue_size=64, workers=SHADOW_WORKERS, on_drop=self._shadow_dropped)
        self._shadow_batches = ShadowBatcher(flush=self._submit_shadow, window_s=0.0, max_rows=1)
        # A colocated teacher's one thread: its ONNX Runtime threads are its CPU budget in the replica.
        self._teacher_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdgate-teacher")
        self._teacher_row_s: float | None = None   # its seconds per row (moving average of its calls)

    # ----- configuration -------------------------------------------------------------
    @property
    def config(self) -> GatewayConfig:
        """The config in force (RuntimeError before the first :meth:`apply`)."""
        if self._state is None:
            raise RuntimeError("gateway has no config yet")
        return self._state.config

    def apply(self, source: Mapping | GatewayConfig, *, actor: str) -> list[str]:
        """Validate and swap in a new config; return the audited changes.

        An invalid config raises :class:`GatewayConfigError` after the rejection is
        logged and audited; the previous config stays in force.
        """
        old = self._state.config if self._state else None
        new, local, text = self._prepare(source, actor=actor)
        changes = diff_config(old, new) if old else ["initial config"]
        self._state = _State(
            config=new, local=local, weights=new.effective_weights(),
            student_weights={v.name: new.effective_weights()[v.name] for v in new.students},
            versions={v.name: v.version for v in new.variants}, text=text, teacher=new.teacher.name,
            **_io_shapes(new, local),
        )
        if old is None or old.teacher != new.teacher:
            self._teacher_row_s = None   # another teacher: its speed is measured again
        self._shadow.queue_size = new.shadow.queue_size
        self._shadow_batches.window_s = new.shadow.batch_window_s
        self._shadow_batches.max_rows = new.shadow.max_batch_rows
        self._obs.config_applied(new)
        if old is None or changes:
            self._obs.audit_applied(actor, old, new)
        return changes

    def check(self, source: Mapping | GatewayConfig, *, actor: str) -> GatewayConfig:
        """Validate a config as :meth:`apply` would (rejections audited) without putting it in force."""
        return self._prepare(source, actor=actor)[0]

    def _prepare(self, source: Mapping | GatewayConfig, *, actor: str
                 ) -> tuple[GatewayConfig, dict[str, OnnxBackend], TextModels | None]:
        """The validated config, its colocated backends and tokenizers (GatewayConfigError, audited, otherwise)."""
        try:
            new = source if isinstance(source, GatewayConfig) else load_gateway_config(source)
            self._check_serveable(new)
            return new, self._local_backends(new), load_text_models(new)
        except (GatewayConfigError, BackendError) as err:
            log.warning("config change by %s rejected: %s", actor, err)
            self._obs.audit_rejected(actor, self._state.config if self._state else None, source, str(err))
            if isinstance(err, BackendError):  # a colocated model that cannot load
                raise GatewayConfigError([("variants", str(err))]) from err
            raise

    def _check_serveable(self, config: GatewayConfig) -> None:
        missing = [v.name for v in config.variants if not v.colocated and v.name not in self._remote]
        if missing:
            raise GatewayConfigError([
                ("variants", f"{', '.join(missing)} not colocated and not deployed in this application; "
                             "adding a remote variant needs a redeploy of the app (args), not user_config"),
            ])

    def _local_backends(self, config: GatewayConfig) -> dict[str, OnnxBackend]:
        """Colocated backends, reusing loaded sessions whose file and device did not change."""
        current = self._state.local if self._state else {}
        old_variants = {v.name: v for v in self._state.config.variants} if self._state else {}
        local = {}
        for v in config.variants:
            if not v.colocated:
                continue
            before = old_variants.get(v.name)
            same = before and (before.model_path, before.device, before.threads) == (v.model_path, v.device, v.threads)
            # build_backend: a remote model is fetched once and verified (a mismatch refuses the config)
            local[v.name] = current[v.name] if same and v.name in current else build_backend(v)
        return local

    # ----- request path --------------------------------------------------------------
    def choose(self, headers: Mapping[str, str], *, version: str | None = None) -> str:
        """The variant that answers: pinned version, forced header, sticky key or a draw."""
        state = self._state
        routing = state.config.routing
        if version is not None:
            for name, v in state.versions.items():
                if v == version:
                    return name
            raise NotFound(f"unknown model version {version!r}; versions: {sorted(set(state.versions.values()))}")
        if routing.allow_force and (forced := headers.get(routing.force_header)):
            if forced not in state.weights:
                raise InvalidInput(f"{routing.force_header}: unknown variant {forced!r}; variants: {sorted(state.weights)}")
            return forced
        sticky = headers.get(routing.sticky_header) if routing.sticky_header else None
        return choose_variant(state.weights, sticky_key=sticky or None, draw=random.random())

    async def answer(
        self, x: np.ndarray, headers: Mapping[str, str], *, version: str | None = None, request_id: str = ""
    ) -> Answer:
        """Answer one batch; a failing student is replaced by the teacher (counted)."""
        state = self._state
        name = self.choose(headers, version=version)
        teacher = state.teacher
        try:
            y = await self._call(state, name, x, route=PRIMARY)
        except BackendError as err:
            if name == teacher:
                raise
            reason = "timeout" if isinstance(err, BackendTimeout) else "error"
            self._obs.fallback(name, reason)
            y = await self._call(state, teacher, x, route=PRIMARY)
            return Answer(y=y, variant=teacher, version=state.versions[teacher], fallback=True)
        self._maybe_shadow(state, name, x, y, request_id)
        return Answer(y=y, variant=name, version=state.versions[name])

    async def _call(self, state: _State, name: str, x: np.ndarray, *, route: str,
                    timeout_s: float | None = None, requests: int = 1) -> np.ndarray:
        """``name``'s answer to ``x``, timed and recorded (``requests``: how many requests ``x``
        carries, more than one for a shadow batch)."""
        start = time.perf_counter()
        if isinstance(x, TextBatch):  # each variant's own tokenizer (ids cached on the batch per file)
            x = state.text.ids(name, x)
        try:
            if name in state.local and name == state.teacher:
                y = await self._colocated_teacher(state.local[name], x)
            elif name in state.local:
                # Inline on purpose: a tiny ONNX student answers in microseconds, less than a
                # thread hand-off costs; in-process calls are therefore not preemptible.
                y = state.local[name].infer(x)
            else:
                limit = timeout_s or state.config.variant(name).timeout_s
                y = await asyncio.wait_for(self._remote[name](x), timeout=limit)
        except asyncio.TimeoutError as err:
            self._obs.request(name, route, time.perf_counter() - start, ok=False, rows=len(x), requests=requests)
            raise BackendTimeout(f"variant {name!r} did not answer within its timeout") from err
        except BackendError:
            self._obs.request(name, route, time.perf_counter() - start, ok=False, rows=len(x), requests=requests)
            raise
        except Exception as err:  # handle/actor errors arrive as Ray's own exception types
            self._obs.request(name, route, time.perf_counter() - start, ok=False, rows=len(x), requests=requests)
            raise BackendError(f"variant {name!r} failed: {err}") from err
        seconds = time.perf_counter() - start
        # A redeploy swapped in another model under this name while the call ran: its answer goes
        # back to the caller but not into the window the new version's gates read.
        record = functools.partial(self._obs.request, name, route, seconds, ok=True, rows=len(x), x=x, y=y,
                                   windowed=not self._superseded(state, name), requests=requests)
        if route == PRIMARY:
            add_model_time(name, seconds)
            after_response(record)  # window stats, input bins, metrics: once the caller has its answer
        else:
            record()
        return y

    async def _colocated_teacher(self, backend: OnnxBackend, x: np.ndarray) -> np.ndarray:
        """In its own thread, off the event loop, unless its calls so far say this one takes less
        than a hand-off costs (``INLINE_MAX_S``); the first call always goes to the thread."""
        per_row = self._teacher_row_s
        if per_row is not None and per_row * len(x) < INLINE_MAX_S:
            y, seconds = _timed_infer(backend, x)
        else:
            y, seconds = await asyncio.get_running_loop().run_in_executor(self._teacher_thread, _timed_infer, backend, x)
        row_s = seconds / max(len(x), 1)
        self._teacher_row_s = row_s if per_row is None else 0.8 * per_row + 0.2 * row_s
        return y

    def _superseded(self, state: _State, *names: str) -> bool:
        """True when the config in force names another model version for one of ``names``."""
        current = self._state
        return current is not state and any(current.versions.get(n) != state.versions.get(n) for n in names)

    # ----- shadow ----------------------------------------------------------------------
    def _maybe_shadow(self, state: _State, primary: str, x: np.ndarray, y: np.ndarray, request_id: str) -> None:
        shadow = state.config.shadow
        teacher, candidate = state.teacher, state.config.rollout_student
        draw = random.random()
        if primary == teacher:
            fraction, others = shadow.fraction, (self._shadow_student(state),)
        elif candidate not in (None, primary) and should_sample(shadow.fraction, draw):
            # A stable student serves: the candidate answers in shadow too, next to the teacher
            # (the reference both are compared with).
            fraction, others = 1.0, (teacher, candidate)
        else:
            fraction, others = _compare_fraction(state, primary), (teacher,)
        if others[0] is None or not should_sample(fraction, draw):
            return

        # Queued only once the primary answer is on its way (the ingress runs deferred work after the
        # response is sent), so shadow work never delays it. Shadow requests to the teacher alone go in
        # batches (its hop is what they cost); a student in shadow is called once per request, since its
        # latency per request is what the rollout's latency gate judges before it serves.
        key, item = (id(state), primary, others), _ShadowItem(state, x, y, request_id)
        if others == (teacher,):
            after_response(functools.partial(self._shadow_batches.add, key, item, rows=len(x)))
        else:
            after_response(functools.partial(self._submit_shadow, key, [item]))

    def _submit_shadow(self, key: tuple[int, str, tuple[str, ...]], items: list[_ShadowItem]) -> None:
        """A shadow batch is complete: queue its job (dropped, and counted per request, when the queue is full)."""
        _, primary, others = key

        async def job() -> None:
            await self._run_shadow(items[0].state, primary, others, items)

        self._shadow.submit(job, label=others[-1], requests=len(items))

    @staticmethod
    def _shadow_student(state: _State) -> str | None:
        """The student a teacher-served request is mirrored to: the rollout's candidate, else by weight,
        else the first."""
        if state.config.rollout_student is not None:
            return state.config.rollout_student
        weights = state.student_weights
        if any(w > 0 for w in weights.values()):
            return choose_variant(weights, sticky_key=None, draw=random.random())
        return next(iter(weights), None)

    async def _run_shadow(self, state: _State, primary: str, others: tuple[str, ...],
                          items: list[_ShadowItem]) -> None:
        cfg = state.config
        teacher, n = cfg.teacher.name, len(items)
        if self._superseded(state, primary, *others):
            # Queued under a config whose models a redeploy has replaced since: under load the
            # queue held thousands of the old version's rows, counted as the new one's outputs.
            self._obs.shadow_drop(others[-1], "superseded", n)
            return
        x, y = _join([i.x for i in items]), _join([i.y for i in items])
        answers = {primary: y}
        for other in others:
            try:
                answers[other] = await self._call(state, other, x, route=SHADOW, timeout_s=cfg.shadow.timeout_s,
                                                  requests=n)
            except BackendTimeout:
                self._obs.shadow_drop(other, "timeout", n)
            except BackendError:
                self._obs.shadow_drop(other, "error", n)
            if teacher not in answers and other == teacher:
                return  # nothing to compare with: the candidate is not asked either
        rows = state.text.capture_rows(teacher, x) if isinstance(x, TextBatch) else x
        # A config swapped in while this ran may name another model version under the same variant
        # name (a redeploy): its gates must not count the old model's answers.
        swapped = {v for v in answers if self._superseded(state, v)}
        ends = np.cumsum([len(i.x) for i in items]).tolist()
        for student, s_out in answers.items():
            if student != teacher and student not in swapped and teacher not in swapped:
                comps, t_out = _compare(cfg, answers[teacher], s_out), answers[teacher]
                for item, a, b in zip(items, [0, *ends], ends):   # per request: capture keeps its id
                    self._obs.comparison(teacher, student, comps[a:b], rows[a:b], t_out[a:b], s_out[a:b],
                                         item.request_id)
        candidate = others[-1]
        if primary != teacher and candidate != teacher and candidate in answers and not swapped:
            # The stable student and the candidate answered the same rows: compare them too.
            self._obs.stable_comparison(primary, candidate, _compare(cfg, y, answers[candidate]))

    def _shadow_dropped(self, variant: str, requests: int) -> None:
        self._obs.shadow_drop(variant, "queue_full", requests)

    @property
    def state(self) -> _State:
        """The config in force and what it needs (read once per request: atomic swaps)."""
        return self._state

    def ready(self) -> bool:
        """True when a config is in force and every colocated backend is ready."""
        state = self._state
        return state is not None and all(b.ready() for b in state.local.values())


def _join(parts: list) -> np.ndarray | TextBatch:
    """One batch of the requests' rows (arrays) or texts, in order."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], TextBatch):
        return TextBatch(tuple(text for part in parts for text in part.texts))
    return np.concatenate(parts)


def _compare(cfg: GatewayConfig, reference: np.ndarray, other: np.ndarray) -> list:
    return compare_outputs(cfg.task, reference, other, regression_tolerance=cfg.shadow.regression_tolerance,
                           embedding_min_cosine=cfg.shadow.embedding_min_cosine)


def _compare_fraction(state: _State, student: str) -> float:
    """Share of a student's live requests the teacher also answers: the guard's share once the
    rollout's student holds the whole split (promoted), the canary's share otherwise."""
    rollout = state.config.rollout
    if rollout is not None and rollout.guard.enabled and student == state.config.rollout_student \
            and state.weights.get(student, 0.0) >= 100.0:
        return rollout.guard.shadow_fraction
    return max(state.config.shadow.fraction, state.config.shadow.canary_compare_fraction)


def _io_shapes(config: GatewayConfig, local: Mapping[str, OnnxBackend]) -> dict:
    """Input/output shapes ``[-1, ...]`` from a colocated session, else a manifest, else None."""
    for backend in local.values():
        shapes = backend.io_shapes()
        if shapes is not None:
            return {"input_shape": shapes[0], "output_shape": shapes[1]}
    for v in config.variants:
        if v.manifest_path:
            try:
                manifest = read_manifest(local_manifest(v.manifest_path))
            except ManifestError as err:
                log.warning("%s; input shape not checked", err)
                continue
            return {"input_shape": list(manifest.input.shape), "output_shape": list(manifest.output.shape)}
    return {}


def _timed_infer(backend: OnnxBackend, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The model's answer and the CPU seconds the calling thread spent on it: what the call costs,
    without a hand-off's time or the time other processes held the core, so the inline choice
    follows the model's cost rather than the machine's load (one intra-op thread computes on the
    caller; with more, the caller's share approximates the uncontended wall time)."""
    start = time.thread_time()
    y = backend.infer(x)
    return y, time.thread_time() - start

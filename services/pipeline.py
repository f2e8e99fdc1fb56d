"""The content pipeline: images (fal.ai or the archive), Cloudinary, caption, Instagram post.

Every run is one trace. A failed run is heard at once: its incident (the playbook's severity
for the step that failed: image generation P1, Cloudinary P0, the token P0, a 429 P1) opens or
counts in as the run fails, and its job retries (5 -> 15 -> 30 min); each step's success
resolves its incident. A publish claims its topic first (services/publications.py): a topic
is posted once and at most PUBLISH_DAILY_LIMIT posts go out a day, unless --force.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.errors import DomainError, InvalidInput, InvalidTransition, NotFound, Unavailable
from services.incident_types import AlertIn, wording
from services.incidents import IncidentService
from services.integrations.cloudinary import CloudinaryClient, CloudinaryError, Uploaded
from services.integrations.fal import FalClient, FalError
from services.integrations.instagram import (
    InstagramClient,
    InstagramError,
    InstagramRateLimited,
    InstagramUnauthorized,
)
from services.models import JobState
from services.providers import CallFailure, ProviderCalls
from services.publications import PublicationService, PublishRefused, Refusal
from services.retry import JobFailed, JobView, RetryService, Runners
from services.severity import Severity
from services.tokens import TokenService, TokenState
from services.traces import TraceRun, TraceService

log = logging.getLogger(__name__)

TOPIC = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
# Instagram's caption limits.
MAX_CAPTION = 2200
MAX_HASHTAGS = 30
MAX_MENTIONS = 20
MAX_CAROUSEL = 10

RATE_LIMIT_KEY = "instagram:rate-limit"
INSTAGRAM_API_KEY = "instagram:api"
BLOCKED_KEY = "instagram:blocked"
CLOUDINARY_KEY = "cloudinary:upload"
FAL_KEY = "fal:generate"
GENERATION_FAILED = "image generation failed"

# The playbook's recovery check, `publish test_topic --dry-run`, works on a fresh install:
# without content of its own, this topic is checked with a built-in caption and image.
TEST_TOPIC = "test_topic"
TEST_CAPTION = "SunFlow Ops dry run (nothing is posted). #sunflow"
# The smallest valid PNG: one transparent pixel.
TEST_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


def check_topic(topic: str) -> str:
    text = topic.strip()
    if not TOPIC.fullmatch(text):
        raise InvalidInput(
            f"{topic!r} is not a topic: lower-case letters, digits, '-' and '_', up to 64"
        )
    return text


def content_key(topic: str) -> str:
    """The incident of one topic's publishing (a caption problem, an interrupted post)."""
    return f"publish:{topic}"


def caption_problems(caption: str) -> list[str]:
    """What keeps a caption from Instagram: empty, too long, too many hashtags or mentions."""
    problems = []
    figures = caption_figures(caption)
    if not caption.strip():
        problems.append("the caption is empty")
    if len(caption) > MAX_CAPTION:
        problems.append(f"{len(caption)} characters, Instagram takes {MAX_CAPTION}")
    if figures["hashtags"] > MAX_HASHTAGS:
        problems.append(f"{figures['hashtags']} hashtags, Instagram takes {MAX_HASHTAGS}")
    if figures["mentions"] > MAX_MENTIONS:
        problems.append(f"{figures['mentions']} mentions, Instagram takes {MAX_MENTIONS}")
    return problems


def caption_figures(caption: str) -> dict[str, int]:
    """The caption's counts against Instagram's limits (a refusal's values)."""
    return {
        "length": len(caption.strip()) and len(caption),
        "max_length": MAX_CAPTION,
        "hashtags": len(re.findall(r"(?<!\w)#\w+", caption)),
        "max_hashtags": MAX_HASHTAGS,
        "mentions": len(re.findall(r"(?<!\w)@[\w.]+", caption)),
        "max_mentions": MAX_MENTIONS,
    }


def images_in(directory: Path) -> list[Path]:
    """The topic's own images: the folder's files, never its `archive/` subfolder."""
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


# -- the playbook's incident for each failing step -------------------------------------------


PLAYBOOK_SCHEDULE = "5m -> 15m -> 30m"


def fal_alert(
    error: str, *, archive: Path | None = None, schedule: str = PLAYBOOK_SCHEDULE
) -> AlertIn:
    """`archive`: the archive image the last retry posted instead."""
    fallback = f" Used the archive image {archive} for this post." if archive else ""
    params: dict[str, Any] = {"error": error, "schedule": schedule}
    return AlertIn(
        severity=Severity.P1,
        title="Image generation failing (FLUX.2 on fal.ai)",
        dedup_key=FAL_KEY,
        source="pipeline",
        description=(
            f"fal.ai: {error}. The job retries {schedule}; the last retry posts an "
            f"image from content/images/<topic>/archive/ if there is one. Check the fal.ai "
            f"status page; retry: sunflow-ops generate <topic> --retry.{fallback}"
        ),
        labels={"component": "fal"},
        wording=wording("fal_archive", **params, image=str(archive))
        if archive
        else wording("fal", **params),
    )


def cloudinary_alert(error: str, path: Path) -> AlertIn:
    return AlertIn(
        severity=Severity.P0,
        title="Cloudinary upload failing",
        dedup_key=CLOUDINARY_KEY,
        source="pipeline",
        description=(
            f"{error}. The local file is kept: {path}. Check CLOUDINARY_URL and the usage in "
            f"the Cloudinary console; upload by hand: sunflow-ops upload {path}"
        ),
        labels={"component": "cloudinary"},
        wording=wording("cloudinary", error=error, path=str(path)),
    )


def instagram_failure(
    exc: InstagramError,
    *,
    operation: str,
    tokens: TokenService,
    trace_id: str,
    schedule: str = PLAYBOOK_SCHEDULE,
) -> JobFailed:
    """The playbook's reading of a Graph API refusal: 401 is the token (P0), 403 publishing
    blocked for the account (P0), 429 the rate limit (P1), anything else an API error (P1)."""
    call = CallFailure("instagram", operation, exc.status or None, str(exc))
    if isinstance(exc, InstagramUnauthorized):
        alert = tokens.unauthorized_alert(where="publishing", trace_id=trace_id)
        return JobFailed(str(exc), alert=alert, call=call)
    if isinstance(exc, InstagramRateLimited):
        seconds = int(exc.retry_after.total_seconds()) if exc.retry_after else None
        wait = f" Retry-After {seconds} s." if seconds is not None else ""
        alert = AlertIn(
            severity=Severity.P1,
            title="Instagram API rate limit (429)",
            dedup_key=RATE_LIMIT_KEY,
            source="pipeline",
            description=(
                f"{exc}.{wait} The retries back off {schedule} (longer when "
                f"Instagram asks); keep to one post a day (PUBLISH_DAILY_LIMIT)."
            ),
            labels={"component": "instagram"},
            wording=wording("instagram_429", error=str(exc), schedule=schedule)
            if seconds is None
            else wording("instagram_429_after", error=str(exc), schedule=schedule, wait=seconds),
        )
        return JobFailed(str(exc), alert=alert, call=call, retry_after=exc.retry_after)
    if exc.status == 403:
        alert = AlertIn(
            severity=Severity.P0,
            title="Instagram publishing blocked (403)",
            dedup_key=BLOCKED_KEY,
            source="pipeline",
            description=f"{exc}. The account cannot publish: check its permissions in Meta.",
            labels={"component": "instagram"},
            wording=wording("instagram_403", error=str(exc)),
        )
        return JobFailed(str(exc), alert=alert, call=call)
    alert = AlertIn(
        severity=Severity.P1,
        title="Instagram API error",
        dedup_key=INSTAGRAM_API_KEY,
        source="pipeline",
        description=f"{exc}. The job retries {schedule}.",
        labels={"component": "instagram"},
        wording=wording("instagram_error", error=str(exc), schedule=schedule),
    )
    return JobFailed(str(exc), alert=alert, call=call)


def blocked_alert(topic: str, refused: DomainError) -> AlertIn:
    """A publish that retrying cannot fix (no caption, a bad caption, a setting missing)."""
    reason = refused.message
    detail = refused.detail if isinstance(refused.detail, dict) else {}
    return AlertIn(
        severity=Severity.P1,
        title=f"Publishing {topic} blocked",
        dedup_key=content_key(topic),
        source="pipeline",
        description=f"{reason}. Fix it, then: sunflow-ops publish {topic} --retry",
        labels={"component": "publish"},
        # The refusal as the chat words errors: its reason and values when it named them.
        wording=wording("publish_blocked", topic=topic, error=reason, refusal=detail),
    )


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class DryRunReport:
    topic: str
    trace_id: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "trace_id": self.trace_id,
            "ok": self.ok,
            "checks": [c.to_json() for c in self.checks],
        }

    def text(self) -> str:
        lines = [f"dry run {self.topic} ({self.trace_id}): {'ok' if self.ok else 'NOT READY'}"]
        lines += [f"  [{'ok' if c.ok else '!!'}] {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)


@dataclass(frozen=True)
class RunResult:
    """A pipeline run: `ok` with what it made, or the job that will retry it."""

    kind: str
    topic: str
    trace_id: str
    ok: bool
    detail: str
    job: JobView | None = None
    outputs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "trace_id": self.trace_id,
            "ok": self.ok,
            "detail": self.detail,
            "job": self.job.to_json() if self.job else None,
            "outputs": self.outputs,
        }

    def text(self) -> str:
        trace = f" ({self.trace_id})" if self.trace_id else ""
        head = f"{self.kind} {self.topic}: {'ok' if self.ok else 'FAILED'}{trace}"
        lines = [head, f"  {self.detail}"] if self.detail else [head]
        job = self.job
        if job is not None and not self.ok:
            incident = f"incident #{job.incident_id}; " if job.incident_id else ""
            lines.append(f"  {incident}{job.plan()}")
        return "\n".join(lines)


def _result_of(kind: str, topic: str, job: JobView, ok_detail: str) -> RunResult:
    ok = job.state is JobState.SUCCEEDED
    return RunResult(kind, topic, job.trace_id or "", ok, ok_detail if ok else job.last_error, job)


class PipelineService:
    """publish, generate_images, upload: the playbook's scripts as one service."""

    def __init__(
        self,
        *,
        content_dir: Path,
        incidents: IncidentService,
        traces: TraceService,
        retry: RetryService,
        tokens: TokenService,
        instagram: InstagramClient,
        cloudinary: CloudinaryClient,
        fal: FalClient,
        publications: PublicationService,
        providers: ProviderCalls,
    ) -> None:
        self.content_dir = content_dir
        self._incidents = incidents
        self._traces = traces
        self._retry = retry
        self._tokens = tokens
        self._instagram = instagram
        self._cloudinary = cloudinary
        self._fal = fal
        self.publications = publications
        self._providers = providers

    @property
    def runners(self) -> Runners:
        """How a stored job of each of its kinds runs again (its own `--retry`, `/retry`,
        the scheduler's due retries)."""
        return {
            "publish": self.run_publish_job,
            "generate_images": self.run_generate_job,
            "upload": self.run_upload_job,
        }

    # -- paths ------------------------------------------------------------------------------

    def topic_dir(self, topic: str) -> Path:
        return self.content_dir / "images" / check_topic(topic)

    def caption_path(self, topic: str) -> Path:
        return self.content_dir / "captions" / f"{check_topic(topic)}.txt"

    def prompt_for(self, topic: str) -> str:
        path = self.content_dir / "prompts" / f"{check_topic(topic)}.txt"
        if path.is_file():
            return path.read_text("utf-8").strip()
        caption = self.caption_path(topic)
        if caption.is_file():
            return caption.read_text("utf-8").strip()[:500]
        return topic.replace("-", " ").replace("_", " ")

    def read_caption(self, topic: str) -> str:
        path = self.caption_path(topic)
        if not path.is_file():
            raise NotFound(f"no caption for {topic}: write {path}")
        return path.read_text("utf-8").strip()

    # -- publish ------------------------------------------------------------------------------

    async def publish(
        self, topic: str, *, retry: bool = False, force: bool = False, actor: str = "cli"
    ) -> RunResult:
        """`sunflow-ops publish TOPIC [--retry] [--force]`.

        With --retry only the topic's failed job runs, and nothing runs when nothing failed
        or the post exists. Without it, a topic already posted and the daily limit are
        refused unless --force; a success settles the topic's failed job, so no armed retry
        posts it again.
        """
        topic = check_topic(topic)
        if retry:
            job = await self._retry.open_job_for("publish", topic)
            if job is None:
                refused = await self.publications.check(topic)
                if refused is not None and refused[0] in (Refusal.POSTED, Refusal.INTERRUPTED):
                    raise PublishRefused(f"nothing to retry: {refused[1]}", reason=refused[0])
                raise InvalidTransition(
                    f"nothing to retry: no failed publish of {topic} "
                    f"(see sunflow-ops retry --list); to publish it, leave out --retry"
                )
            done = await self._retry.retry_now(job.id, self.runners, actor=actor, force=force)
            return _result_of("publish", topic, done, "published")
        try:
            trace_id, outputs = await self._publish_flow(topic, job=None, force=force, actor=actor)
        except JobFailed as failed:
            job = await self._retry.failed("publish", topic, failed)
            return RunResult("publish", topic, failed.trace_id or "", False, failed.error, job)
        return RunResult("publish", topic, trace_id, True, "published", outputs=outputs)

    async def run_publish_job(self, job: JobView) -> str | None:
        try:
            trace_id, _ = await self._publish_flow(
                job.topic, job=job, force=job.forced, actor=f"retry job #{job.id}"
            )
        except PublishRefused as refused:
            if refused.reason is Refusal.POSTED:
                # Posted another way meanwhile: the job's work is done, nothing is posted.
                log.info("job #%s: %s; nothing to do", job.id, refused.message)
                return None
            if refused.retry_at is not None:
                raise JobFailed(refused.message, defer_until=refused.retry_at) from None
            raise JobFailed(
                refused.message,
                retryable=False,
                alert=blocked_alert(job.topic, refused),
            ) from None
        return trace_id

    async def _publish_flow(
        self, topic: str, *, job: JobView | None, force: bool, actor: str
    ) -> tuple[str, dict[str, Any]]:
        claim = await self.publications.claim(
            topic, actor=actor, force=force, job_id=job.id if job else None
        )
        run = await self._traces.start("publish", topic, job_id=job.id if job else None)
        last_try = job is not None and job.attempts + 1 >= job.max_attempts
        posting = _Posting()
        try:
            images = await self._images(run, topic, allow_archive=last_try)
            async with run.step("caption") as step:
                caption = self.read_caption(topic)
                problems = caption_problems(caption)
                step.details["length"] = len(caption)
                if problems:
                    raise InvalidInput(
                        "caption: " + "; ".join(problems),
                        detail={"reason": "caption", **caption_figures(caption)},
                    )
            uploads = await self._upload_all(run, topic, images)
            media_id = await self._post(run, uploads, caption, posting)
        except JobFailed as failed:
            await self._unclaim(claim, run, posting)
            await run.finish(error=failed.error)
            failed.trace_id = run.id
            raise
        except (InvalidInput, NotFound, Unavailable) as exc:
            await self._unclaim(claim, run, posting)
            await run.finish(error=exc.message)
            raise JobFailed(
                exc.message,
                trace_id=run.id,
                retryable=False,
                alert=blocked_alert(topic, exc),
            ) from None
        except BaseException:
            await self._unclaim(claim, run, posting)
            raise
        await self.publications.posted(claim, media_id=media_id, trace_id=run.id)
        await run.finish()
        await self._tokens.authorized()
        for key in (RATE_LIMIT_KEY, INSTAGRAM_API_KEY, BLOCKED_KEY, content_key(topic)):
            await self._incidents.resolve_by_dedup_key(key, actor="publish")
        await self._retry.settle("publish", topic, actor=f"publish ({run.id})")
        log.info("published %s: media %s, trace %s", topic, media_id, run.id)
        return run.id, {"media_id": media_id, "images": [u.secure_url for u in uploads]}

    async def _unclaim(self, claim: int, run: TraceRun, posting: _Posting) -> None:
        if posting.maybe_published:
            # The publish call got no answer: Instagram may have posted. The claim stays
            # as interrupted, so no retry posts twice; a person checks and uses --force.
            await self.publications.interrupted(claim, trace_id=run.id)
        else:
            await self.publications.not_posted(claim, trace_id=run.id)

    async def _images(self, run: TraceRun, topic: str, *, allow_archive: bool) -> list[Path]:
        directory = self.topic_dir(topic)
        async with run.step("images") as step:
            found = images_in(directory)
            step.details["found"] = len(found)
            if found:
                step.details["source"] = "local"
                return found[:MAX_CAROUSEL]
            step.details["source"] = "fal.ai"
            try:
                return await self._generate_into(topic, directory, run)
            except JobFailed as exc:
                step.details["generation_error"] = exc.error
                archived = images_in(directory / "archive")
                if not allow_archive or not archived:
                    raise
                failed = exc
                step.status = "fallback"
                step.details["source"] = "archive"
        # The retries are spent: post an archived image, for this post only. It is used from
        # the archive where it lies (never copied among the topic's images, where the next
        # post would pick it up) and named in the trace.
        chosen = archived[0]
        await run.note(
            "fallback_archive", status="fallback", image=str(chosen), error=failed.error
        )
        error = failed.call.error if failed.call else failed.error
        await self._count_in(
            fal_alert(
                error,
                archive=chosen,
                schedule=self._retry.schedule,
            ),
            failed.call,
            run,
            note=f"{failed.error}; the archive image {chosen} is used for this post",
        )
        return [chosen]

    async def _generate_into(self, topic: str, directory: Path, run: TraceRun) -> list[Path]:
        """fal.ai's images saved as `<topic>-N.ext`; JobFailed (with the P1 incident) if not."""
        try:
            images = await self._fal.generate(self.prompt_for(topic))
        except (FalError, Unavailable) as exc:
            error = exc.message if isinstance(exc, Unavailable) else str(exc)
            if isinstance(exc, Unavailable):
                raise JobFailed(
                    f"{GENERATION_FAILED}: {error}",
                    trace_id=run.id,
                    retryable=False,
                    alert=blocked_alert(topic, exc),
                ) from None
            raise JobFailed(
                f"{GENERATION_FAILED}: {error}",
                trace_id=run.id,
                alert=fal_alert(error, schedule=self._retry.schedule),
                call=CallFailure("fal", "generate", exc.status, error),
            ) from None
        await self._providers.ok("fal", "generate")
        await self._incidents.resolve_by_dedup_key(FAL_KEY, actor="fal.ai")
        directory.mkdir(parents=True, exist_ok=True)
        saved = []
        for index, image in enumerate(images, start=1):
            path = directory / f"{topic}-{index}{image.extension}"
            path.write_bytes(image.content)
            saved.append(path)
        await self._retry.settle("generate_images", topic, actor=f"generated ({run.id})")
        return saved

    async def _upload_all(self, run: TraceRun, topic: str, images: list[Path]) -> list[Uploaded]:
        async with run.step("upload") as step:
            uploads = []
            step.details["files"] = [str(p) for p in images]
            for path in images:
                uploads.append(await self._upload_one(path, topic, run))
            step.details["urls"] = [u.secure_url for u in uploads]
        return uploads

    async def _upload_one(self, path: Path, topic: str, run: TraceRun) -> Uploaded:
        try:
            uploaded = await self._cloudinary.upload(path, folder=f"sunflow/{topic}")
        except CloudinaryError as exc:
            raise JobFailed(
                str(exc),
                trace_id=run.id,
                alert=cloudinary_alert(str(exc), path),
                call=CallFailure("cloudinary", "upload", exc.status, str(exc)),
            ) from None
        await self._providers.ok("cloudinary", "upload")
        await self._incidents.resolve_by_dedup_key(CLOUDINARY_KEY, actor="cloudinary")
        return uploaded

    async def _post(
        self, run: TraceRun, uploads: list[Uploaded], caption: str, posting: _Posting
    ) -> str:
        async with run.step("instagram") as step:
            operation = "media"
            try:
                if len(uploads) == 1:
                    creation = await self._instagram.create_container(
                        image_url=uploads[0].secure_url, caption=caption
                    )
                else:
                    children = [
                        await self._instagram.create_container(
                            image_url=u.secure_url, is_carousel_item=True
                        )
                        for u in uploads
                    ]
                    creation = await self._instagram.create_container(
                        children=children, caption=caption
                    )
                step.details["creation_id"] = creation
                operation = "media_publish"
                posting.calling = True
                media_id = await self._instagram.publish(creation)
                posting.calling = False
            except InstagramError as exc:
                # An answer (any HTTP status) means it did not publish; no answer may mean it did.
                posting.maybe_published = posting.calling and not exc.status
                raise instagram_failure(
                    exc,
                    operation=operation,
                    tokens=self._tokens,
                    trace_id=run.id,
                    schedule=self._retry.schedule,
                ) from None
            except BaseException:
                posting.maybe_published = posting.calling
                raise
            step.details["media_id"] = media_id
        await self._providers.ok("instagram", operation)
        return media_id

    async def _count_in(
        self, alert: AlertIn, call: CallFailure | None, run: TraceRun, *, note: str
    ) -> None:
        """A failure that is no job's (the archive fallback covered it): counted into its
        incident and logged all the same."""
        labels = {**alert.labels, "trace_id": run.id, "kind": run.kind, "topic": run.topic}
        result = await self._incidents.trigger(
            AlertIn(
                alert.severity,
                alert.title,
                alert.dedup_key,
                alert.source,
                alert.description,
                labels,
            ),
            actor="pipeline",
        )
        if call is not None:
            await self._providers.failed(call, trace_id=run.id)
        log.error(
            "%s %s failed: provider=%s operation=%s status=%s trace=%s incident=#%s: %s",
            run.kind,
            run.topic,
            call.provider if call else "-",
            call.operation if call else "-",
            call.status_text if call else "-",
            run.id,
            result.incident.id,
            note[:500],
        )

    # -- dry run ----------------------------------------------------------------------------

    async def dry_run(self, topic: str) -> DryRunReport:
        """Checks everything a publish needs and posts nothing (the playbook's recovery check).

        A provider whose last real call failed is reported as failing even when it answers a
        probe: the probe is not the work.
        """
        topic = check_topic(topic)
        run = await self._traces.start("publish-dry-run", topic)
        checks: list[Check] = []
        providers = await self._providers.all()
        sample = topic == TEST_TOPIC

        async with run.step("token") as step:
            status = await self._tokens.status()
            ok = status.configured and status.state not in {TokenState.EXPIRED}
            detail = status.state.value
            if status.restart_needed:
                ok, detail = False, f"{detail}; {status.restart_text}"
            elif ok and self._instagram.configured:
                try:
                    account = await self._instagram.account()
                    detail += f", account @{account.get('username', account.get('id', '?'))}"
                except InstagramUnauthorized as exc:
                    ok, detail = False, f"401: {exc}"
                except InstagramError as exc:
                    ok, detail = False, str(exc)
            elif not self._instagram.configured:
                ok, detail = False, "INSTAGRAM_ACCESS_TOKEN or INSTAGRAM_USER_ID is not set"
            state = providers.get("instagram")
            if ok and state is not None and state.failing:
                ok, detail = False, f"{detail}; {state.describe()}"
            checks.append(Check("token", ok, detail))
            step.status = "ok" if ok else "failed"

        async with run.step("guards") as step:
            refused = await self.publications.check(topic)
            day = self.publications.today()
            today = [
                p
                for p in await self.publications.on_day(day)
                if p.state.value in ("posted", "interrupted")
            ]
            counted = f"{len(today)} of {self.publications.daily_limit} posts on {day}"
            if refused is None:
                checks.append(Check("guards", True, f"{counted} (PUBLISH_DAILY_LIMIT)"))
            elif sample:
                # The recovery check is about the pipeline; test_topic is never posted.
                checks.append(Check("guards", True, f"{counted}; {TEST_TOPIC} is not posted"))
            else:
                checks.append(Check("guards", False, refused[1]))
            step.status = "ok" if checks[-1].ok else "failed"

        async with run.step("images") as step:
            directory = self.topic_dir(topic)
            found = images_in(directory)
            archived = images_in(directory / "archive")
            fal_state = providers.get("fal")
            if found:
                checks.append(Check("images", True, f"{len(found)} in {directory}"))
            elif sample:
                checks.append(Check("images", True, "built-in test image (test_topic)"))
            elif self._fal.configured and fal_state is not None and fal_state.failing:
                spare = f"; the archive has {len(archived)} for the last retry" if archived else ""
                checks.append(
                    Check("images", False, f"none yet; fal.ai's {fal_state.describe()}{spare}")
                )
            elif self._fal.configured:
                checks.append(Check("images", True, "none yet; fal.ai will generate them"))
            elif archived:
                checks.append(Check("images", True, f"none; {len(archived)} in the archive"))
            else:
                checks.append(Check("images", False, f"no images in {directory}"))
            step.status = "ok" if checks[-1].ok else "failed"

        async with run.step("caption") as step:
            try:
                caption = self.read_caption(topic)
            except NotFound as exc:
                if sample:
                    checks.append(Check("caption", True, "built-in test caption (test_topic)"))
                else:
                    checks.append(Check("caption", False, exc.message))
            else:
                problems = caption_problems(caption)
                checks.append(
                    Check(
                        "caption",
                        not problems,
                        "; ".join(problems) or f"{len(caption)} characters",
                    )
                )
            step.status = "ok" if checks[-1].ok else "failed"

        async with run.step("cloudinary") as step:
            try:
                await self._cloudinary.ping()
                state = providers.get("cloudinary")
                if state is not None and state.failing:
                    # The ping is an authenticated API call: good evidence it is back, but
                    # only an upload proves it (health stays down until one succeeds).
                    checks.append(
                        Check(
                            "cloudinary",
                            True,
                            f"reachable now, but the {state.describe()}; an upload "
                            f"(sunflow-ops upload PATH, or the retry) confirms it",
                        )
                    )
                else:
                    checks.append(Check("cloudinary", True, "reachable"))
            except (CloudinaryError, Unavailable) as exc:
                text = exc.message if isinstance(exc, Unavailable) else str(exc)
                checks.append(Check("cloudinary", False, text))
            step.status = "ok" if checks[-1].ok else "failed"

        report = DryRunReport(topic, run.id, checks)
        failed = [c.name for c in checks if not c.ok]
        await run.finish(error=f"not ready: {', '.join(failed)}" if failed else None)
        return report

    # -- images and uploads on their own ----------------------------------------------------

    async def generate_images(self, topic: str, *, retry: bool = False) -> RunResult:
        """`sunflow-ops generate TOPIC [--retry]`: new images from fal.ai into the topic folder.

        --retry runs the topic's failed image generation: its `generate_images` job, the
        generation a failed publish of the topic waits for, or (image generation failing, its
        incident open) a new one to see whether fal.ai works again; nothing otherwise.
        """
        topic = check_topic(topic)
        if retry:
            job = await self._retry.open_job_for("generate_images", topic)
            if job is not None:
                done = await self._retry.retry_now(job.id, self.runners, actor="generate --retry")
                return _result_of("generate_images", topic, done, "generated")
            waiting = await self._retry.open_job_for("publish", topic)
            publish_waits = waiting is not None and waiting.last_error.startswith(
                GENERATION_FAILED
            )
            if not publish_waits and not await self._incidents.open_dedup_keys([FAL_KEY]):
                raise InvalidTransition(
                    f"nothing to retry: image generation is not failing and no job of "
                    f"{topic} waits for it (see sunflow-ops retry --list)"
                )
        try:
            trace_id, outputs = await self._generate_flow(topic, job=None)
        except JobFailed as failed:
            job = await self._retry.failed("generate_images", topic, failed)
            return RunResult(
                "generate_images", topic, failed.trace_id or "", False, failed.error, job
            )
        detail = "generated"
        waiting = await self._retry.open_job_for("publish", topic)
        if waiting is not None and waiting.next_retry_at is not None:
            detail += (
                f"; the publish job #{waiting.id} posts them at its next retry "
                f"({waiting.next_retry_at:%H:%M} UTC), or now: sunflow-ops publish {topic} --retry"
            )
        elif waiting is not None:
            detail += f"; post them: sunflow-ops publish {topic} --retry"
        return RunResult("generate_images", topic, trace_id, True, detail, outputs=outputs)

    async def run_generate_job(self, job: JobView) -> str:
        return (await self._generate_flow(job.topic, job=job))[0]

    async def _generate_flow(
        self, topic: str, *, job: JobView | None
    ) -> tuple[str, dict[str, Any]]:
        run = await self._traces.start("generate_images", topic, job_id=job.id if job else None)
        try:
            async with run.step("generate") as step:
                saved = await self._generate_into(topic, self.topic_dir(topic), run)
                step.details["images"] = [str(p) for p in saved]
        except JobFailed as failed:
            await run.finish(error=failed.error)
            failed.trace_id = run.id
            raise
        await run.finish()
        return run.id, {"images": [str(p) for p in saved]}

    async def run_upload_job(self, job: JobView) -> str:
        topic, _, name = job.topic.partition("/")
        result = await self.upload(self.topic_dir(topic) / name, topic=topic, job=job)
        return result.trace_id

    async def upload(
        self, path: Path, *, topic: str | None = None, job: JobView | None = None
    ) -> RunResult:
        """`sunflow-ops upload PATH`: the manual upload; the file is kept in the topic folder.

        A success settles the failed upload job of the same file, so its retry does not
        upload it again.
        """
        source = path.expanduser()
        if not source.is_file():
            raise NotFound(f"no file {path}")
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise InvalidInput(f"{path} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
        images_root = (self.content_dir / "images").resolve()
        resolved = source.resolve()
        if topic is None:
            inside = images_root in resolved.parents
            topic = resolved.relative_to(images_root).parts[0] if inside else "manual"
        directory = self.topic_dir(topic)
        if directory.resolve() not in resolved.parents:
            directory.mkdir(parents=True, exist_ok=True)
            shutil.copy2(resolved, directory / resolved.name)
            resolved = (directory / resolved.name).resolve()
        # An upload job's topic is "<topic>/<file name>": what the retry uploads again.
        work = f"{topic}/{resolved.name}"
        run = await self._traces.start("upload", topic, job_id=job.id if job else None)
        try:
            async with run.step("upload") as step:
                uploaded = await self._upload_one(resolved, topic, run)
                step.details.update(uploaded.to_json())
        except JobFailed as failed:
            await run.finish(error=failed.error)
            failed.trace_id = run.id
            if job is not None:
                raise
            failed_job = await self._retry.failed("upload", work, failed)
            return RunResult(
                "upload",
                topic,
                run.id,
                False,
                failed.error,
                failed_job,
                outputs={"path": str(resolved)},
            )
        await run.finish()
        await self._retry.settle("upload", work, actor=f"upload ({run.id})")
        return RunResult(
            "upload",
            topic,
            run.id,
            True,
            uploaded.secure_url,
            outputs={"path": str(resolved), **uploaded.to_json()},
        )


@dataclass
class _Posting:
    """Where a publish stands with Instagram's media_publish call."""

    calling: bool = False
    maybe_published: bool = False

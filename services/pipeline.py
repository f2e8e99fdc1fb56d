"""The content pipeline: images (fal.ai or the archive), Cloudinary, caption, Instagram post.

Every run is one trace. A failed run becomes a retry job; the incidents the playbook names
are raised on the way (401 -> P0 token, 429 -> P1 rate limit, Cloudinary -> P0) and resolved
by the next run that gets through.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.errors import InvalidInput, NotFound, Unavailable
from services.incidents import AlertIn, IncidentService
from services.integrations.cloudinary import CloudinaryClient, CloudinaryError, Uploaded
from services.integrations.fal import FalClient, FalError
from services.integrations.instagram import (
    InstagramClient,
    InstagramError,
    InstagramRateLimited,
    InstagramUnauthorized,
)
from services.retry import JobFailed, JobView, RetryService
from services.severity import Severity
from services.tokens import TokenService, TokenState
from services.traces import TraceRun, TraceService

TOPIC = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
# Instagram's caption limits.
MAX_CAPTION = 2200
MAX_HASHTAGS = 30
MAX_MENTIONS = 20
MAX_CAROUSEL = 10

RATE_LIMIT_KEY = "instagram:rate-limit"
CLOUDINARY_KEY = "cloudinary:upload"
FAL_KEY = "fal:generate"


def check_topic(topic: str) -> str:
    text = topic.strip()
    if not TOPIC.fullmatch(text):
        raise InvalidInput(
            f"{topic!r} is not a topic: lower-case letters, digits, '-' and '_', up to 64"
        )
    return text


def caption_problems(caption: str) -> list[str]:
    """What keeps a caption from Instagram: empty, too long, too many hashtags or mentions."""
    problems = []
    if not caption.strip():
        problems.append("the caption is empty")
    if len(caption) > MAX_CAPTION:
        problems.append(f"{len(caption)} characters, Instagram takes {MAX_CAPTION}")
    hashtags = len(re.findall(r"(?<!\w)#\w+", caption))
    if hashtags > MAX_HASHTAGS:
        problems.append(f"{hashtags} hashtags, Instagram takes {MAX_HASHTAGS}")
    mentions = len(re.findall(r"(?<!\w)@[\w.]+", caption))
    if mentions > MAX_MENTIONS:
        problems.append(f"{mentions} mentions, Instagram takes {MAX_MENTIONS}")
    return problems


def images_in(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
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
        head = f"{self.kind} {self.topic}: {'ok' if self.ok else 'FAILED'} ({self.trace_id})"
        lines = [head, f"  {self.detail}"] if self.detail else [head]
        if self.job is not None:
            lines.append(f"  retry job #{self.job.id}: {self.job.state.value}")
        return "\n".join(lines)


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
    ) -> None:
        self.content_dir = content_dir
        self._incidents = incidents
        self._traces = traces
        self._retry = retry
        self._tokens = tokens
        self._instagram = instagram
        self._cloudinary = cloudinary
        self._fal = fal
        retry.register("publish", self._run_publish_job)
        retry.register("generate_images", self._run_generate_job)
        retry.register("upload", self._run_upload_job)

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

    async def publish(self, topic: str, *, retry: bool = False) -> RunResult:
        """`sunflow-ops publish TOPIC [--retry]`; with --retry an open job is retried instead."""
        topic = check_topic(topic)
        if retry:
            job = await self._retry.open_job_for("publish", topic)
            if job is not None:
                done = await self._retry.retry_now(job.id, actor="publish --retry")
                return RunResult(
                    "publish",
                    topic,
                    done.trace_id or "",
                    done.state.value == "succeeded",
                    done.last_error if done.state.value != "succeeded" else "published",
                    job=done,
                )
        try:
            trace_id, outputs = await self._publish_flow(topic, job=None)
        except JobFailed as failed:
            job = await self._retry.record_failure(
                "publish",
                topic,
                error=failed.error,
                trace_id=failed.trace_id,
                retry_after=failed.retry_after,
                retryable=failed.retryable,
            )
            return RunResult("publish", topic, failed.trace_id or "", False, failed.error, job)
        return RunResult("publish", topic, trace_id, True, "published", outputs=outputs)

    async def _run_publish_job(self, job: JobView) -> str:
        return (await self._publish_flow(job.topic, job=job))[0]

    async def _publish_flow(
        self, topic: str, *, job: JobView | None
    ) -> tuple[str, dict[str, Any]]:
        run = await self._traces.start("publish", topic, job_id=job.id if job else None)
        last_try = job is not None and job.attempts + 1 >= job.max_attempts
        try:
            images = await self._images(run, topic, allow_archive=last_try)
            async with run.step("caption") as step:
                caption = self.read_caption(topic)
                problems = caption_problems(caption)
                step.details["length"] = len(caption)
                if problems:
                    raise InvalidInput("caption: " + "; ".join(problems))
            uploads = await self._upload_all(run, topic, images)
            media_id = await self._post(run, uploads, caption)
        except JobFailed as failed:
            await run.finish(error=failed.error)
            failed.trace_id = run.id
            raise
        except (InvalidInput, NotFound, Unavailable) as exc:
            await run.finish(error=exc.message)
            raise JobFailed(exc.message, trace_id=run.id, retryable=False) from None
        await run.finish()
        await self._tokens.authorized()
        await self._incidents.resolve_by_dedup_key(RATE_LIMIT_KEY, actor="publish")
        return run.id, {"media_id": media_id, "images": [u.secure_url for u in uploads]}

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
                return await self._generate_into(topic, directory)
            except (FalError, Unavailable) as exc:
                error = exc.message if isinstance(exc, Unavailable) else str(exc)
                step.details["generation_error"] = error
                archived = images_in(directory / "archive")
                if not allow_archive or not archived:
                    raise JobFailed(f"image generation failed: {error}") from None
                step.status = "fallback"
        # The retries are spent: take an archived image and say so in the trace.
        chosen = archived[0]
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / chosen.name
        shutil.copy2(chosen, target)
        await run.note("fallback_archive", status="fallback", image=str(chosen), error=error)
        await self._raise(
            FAL_KEY,
            Severity.P1,
            "Image generation failing (FLUX.2): archive image used",
            f"fal.ai failed after the retries: {error}. Used {chosen}.",
            run,
        )
        return [target]

    async def _generate_into(self, topic: str, directory: Path) -> list[Path]:
        images = await self._fal.generate(self.prompt_for(topic))
        directory.mkdir(parents=True, exist_ok=True)
        saved = []
        for index, image in enumerate(images, start=1):
            path = directory / f"{topic}-{index}{image.extension}"
            path.write_bytes(image.content)
            saved.append(path)
        return saved

    async def _upload_all(self, run: TraceRun, topic: str, images: list[Path]) -> list[Uploaded]:
        async with run.step("upload") as step:
            uploads = []
            for path in images:
                try:
                    uploads.append(await self._cloudinary.upload(path, folder=f"sunflow/{topic}"))
                except CloudinaryError as exc:
                    await self._raise(
                        CLOUDINARY_KEY,
                        Severity.P0,
                        "Cloudinary upload failed",
                        f"{exc}. The local file is kept: {path}. "
                        f"Upload by hand: sunflow-ops upload {path}",
                        run,
                    )
                    raise JobFailed(str(exc)) from None
            step.details["urls"] = [u.secure_url for u in uploads]
        await self._incidents.resolve_by_dedup_key(CLOUDINARY_KEY, actor="publish")
        return uploads

    async def _post(self, run: TraceRun, uploads: list[Uploaded], caption: str) -> str:
        async with run.step("instagram") as step:
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
                media_id = await self._instagram.publish(creation)
            except InstagramUnauthorized as exc:
                await self._tokens.unauthorized(where="publishing", trace_id=run.id)
                raise JobFailed(str(exc)) from None
            except InstagramRateLimited as exc:
                wait = (
                    f" Retry-After {int(exc.retry_after.total_seconds())} s."
                    if exc.retry_after
                    else ""
                )
                await self._raise(
                    RATE_LIMIT_KEY,
                    Severity.P1,
                    "Instagram API rate limit (429)",
                    f"{exc}.{wait} The retries back off 5 min -> 15 min -> 30 min.",
                    run,
                )
                raise JobFailed(str(exc), retry_after=exc.retry_after) from None
            except InstagramError as exc:
                raise JobFailed(str(exc)) from None
            step.details["media_id"] = media_id
            return media_id

    async def _raise(
        self, key: str, severity: Severity, title: str, description: str, run: TraceRun
    ) -> None:
        # kind and topic let the retry service find the jobs behind the incident.
        await self._incidents.trigger(
            AlertIn(
                severity=severity,
                title=title,
                dedup_key=key,
                source="pipeline",
                description=description,
                labels={"trace_id": run.id, "kind": run.kind, "topic": run.topic},
            ),
            actor="pipeline",
        )

    # -- dry run ----------------------------------------------------------------------------

    async def dry_run(self, topic: str) -> DryRunReport:
        """Checks everything a publish needs and posts nothing (the playbook's recovery check)."""
        topic = check_topic(topic)
        run = await self._traces.start("publish-dry-run", topic)
        checks: list[Check] = []

        async with run.step("token") as step:
            status = await self._tokens.status()
            ok = status.configured and status.state not in {TokenState.EXPIRED}
            detail = status.state.value
            if ok and self._instagram.configured:
                try:
                    account = await self._instagram.account()
                    detail += f", account @{account.get('username', account.get('id', '?'))}"
                except InstagramUnauthorized as exc:
                    ok, detail = False, f"401: {exc}"
                except InstagramError as exc:
                    ok, detail = False, str(exc)
            elif not self._instagram.configured:
                ok, detail = False, "INSTAGRAM_ACCESS_TOKEN or INSTAGRAM_USER_ID is not set"
            checks.append(Check("token", ok, detail))
            step.status = "ok" if ok else "failed"

        async with run.step("images") as step:
            found = images_in(self.topic_dir(topic))
            archived = images_in(self.topic_dir(topic) / "archive")
            if found:
                checks.append(Check("images", True, f"{len(found)} in {self.topic_dir(topic)}"))
            elif self._fal.configured:
                checks.append(Check("images", True, "none yet; fal.ai will generate them"))
            elif archived:
                checks.append(Check("images", True, f"none; {len(archived)} in the archive"))
            else:
                checks.append(Check("images", False, f"no images in {self.topic_dir(topic)}"))
            step.status = "ok" if checks[-1].ok else "failed"

        async with run.step("caption") as step:
            try:
                caption = self.read_caption(topic)
                problems = caption_problems(caption)
                checks.append(
                    Check(
                        "caption",
                        not problems,
                        "; ".join(problems) or f"{len(caption)} characters",
                    )
                )
            except NotFound as exc:
                checks.append(Check("caption", False, exc.message))
            step.status = "ok" if checks[-1].ok else "failed"

        async with run.step("cloudinary") as step:
            try:
                await self._cloudinary.ping()
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
        """`sunflow-ops generate TOPIC [--retry]`: new images from fal.ai into the topic folder."""
        topic = check_topic(topic)
        if retry:
            job = await self._retry.open_job_for("generate_images", topic)
            if job is not None:
                done = await self._retry.retry_now(job.id, actor="generate --retry")
                ok = done.state.value == "succeeded"
                return RunResult(
                    "generate_images",
                    topic,
                    done.trace_id or "",
                    ok,
                    "generated" if ok else done.last_error,
                    job=done,
                )
        try:
            trace_id, outputs = await self._generate_flow(topic, job=None)
        except JobFailed as failed:
            job = await self._retry.record_failure(
                "generate_images", topic, error=failed.error, trace_id=failed.trace_id
            )
            return RunResult(
                "generate_images", topic, failed.trace_id or "", False, failed.error, job
            )
        return RunResult("generate_images", topic, trace_id, True, "generated", outputs=outputs)

    async def _run_generate_job(self, job: JobView) -> str:
        return (await self._generate_flow(job.topic, job=job))[0]

    async def _generate_flow(
        self, topic: str, *, job: JobView | None
    ) -> tuple[str, dict[str, Any]]:
        run = await self._traces.start("generate_images", topic, job_id=job.id if job else None)
        try:
            async with run.step("generate") as step:
                saved = await self._generate_into(topic, self.topic_dir(topic))
                step.details["images"] = [str(p) for p in saved]
        except (FalError, Unavailable) as exc:
            error = exc.message if isinstance(exc, Unavailable) else str(exc)
            await run.finish(error=error)
            raise JobFailed(f"image generation failed: {error}", trace_id=run.id) from None
        await run.finish()
        await self._incidents.resolve_by_dedup_key(FAL_KEY, actor="generate_images")
        return run.id, {"images": [str(p) for p in saved]}

    async def _run_upload_job(self, job: JobView) -> str:
        topic, _, name = job.topic.partition("/")
        result = await self.upload(self.topic_dir(topic) / name, topic=topic, job=job)
        return result.trace_id

    async def upload(
        self, path: Path, *, topic: str | None = None, job: JobView | None = None
    ) -> RunResult:
        """`sunflow-ops upload PATH`: the manual upload; the file is kept in the topic folder."""
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
        run = await self._traces.start("upload", topic, job_id=job.id if job else None)
        try:
            async with run.step("upload") as step:
                uploaded = await self._cloudinary.upload(resolved, folder=f"sunflow/{topic}")
                step.details.update(uploaded.to_json())
        except (CloudinaryError, Unavailable) as exc:
            error = exc.message if isinstance(exc, Unavailable) else str(exc)
            await run.finish(error=error)
            if job is not None:
                raise JobFailed(error, trace_id=run.id) from None
            # An upload job's topic is "<topic>/<file name>": what the retry uploads again.
            failed = await self._retry.record_failure(
                "upload", f"{topic}/{resolved.name}", error=error, trace_id=run.id
            )
            return RunResult(
                "upload", topic, run.id, False, error, failed, outputs={"path": str(resolved)}
            )
        await run.finish()
        await self._incidents.resolve_by_dedup_key(CLOUDINARY_KEY, actor="upload")
        return RunResult(
            "upload",
            topic,
            run.id,
            True,
            uploaded.secure_url,
            outputs={"path": str(resolved), **uploaded.to_json()},
        )

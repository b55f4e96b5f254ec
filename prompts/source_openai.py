"""Prompts from any OpenAI-compatible chat endpoint with image input (the paper used GPT-4o).

One request per origin shows the origin image and asks for N prompts as JSON
`{"prompts": [...]}`. A reply is accepted only if it parses and holds N unique non-empty
strings; otherwise the origin is asked again (`max_invalid` times). HTTP 429 and 5xx and
connection errors are retried with exponential backoff (honouring Retry-After). At most
`concurrency` requests are in flight. Every accepted reply is cached on disk under a key of
(endpoint, model, request text, image content hash, N, temperature), so a rerun pays nothing
twice. Token usage and an estimated cost are summed; prices are settings (USD per million
tokens; the defaults are GPT-4o's list prices when this was written: check yours).

The API key is read from the environment variable `api_key_env` at construction; it is sent
only in the Authorization header and never logged, cached or written.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from oripid.errors import OripidError
from oripid.prompts.base import OriginRef

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You write prompts for text-guided image-to-image diffusion models. Each prompt describes an "
    "edited version of the given photo: a change of style, season, lighting, weather, setting or "
    "medium that keeps its main subject recognisable."
)
USER_PROMPT = (
    "Write {n} different prompts for this image, each one sentence under 40 words, no two alike. "
    'Answer with JSON only: {{"prompts": ["...", ...]}} holding exactly {n} strings.'
)


class OpenAIOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "https://api.openai.com/v1", description="endpoint root; /chat/completions is appended"
    )
    model: str = "gpt-4o"
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    concurrency: int = Field(4, ge=1)
    max_retries: int = Field(6, ge=0, description="retries of 429/5xx/connection errors per request")
    max_invalid: int = Field(2, ge=0, description="re-asks after a reply that fails the schema")
    backoff_seconds: float = Field(1.0, ge=0, description="first retry delay; doubles each retry")
    max_backoff_seconds: float = Field(60.0, ge=0)
    timeout_seconds: float = Field(120.0, gt=0)
    temperature: float = Field(1.0, ge=0)
    image_max_side: int = Field(512, ge=32, description="the origin is sent as JPEG this size at most")
    detail: str = Field("low", description="image_url detail: low, high or auto")
    input_usd_per_mtok: float = Field(2.50, ge=0)
    output_usd_per_mtok: float = Field(10.00, ge=0)
    json_mode: bool = Field(True, description="send response_format json_object")


class InvalidReply(Exception):
    pass


class RetryableHTTP(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class OpenAISource:
    name = "openai"

    def __init__(self, options: OpenAIOptions, cache_dir: str | Path):
        self.options = options
        key = os.environ.get(options.api_key_env, "")
        if not key:
            raise OripidError(
                f"prompts source openai: the environment variable {options.api_key_env} is empty; "
                "export the API key there (it is never written anywhere)"
            )
        self._key = key
        self.url = options.base_url.rstrip("/") + "/chat/completions"
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.stats = {
            "requests": 0,
            "retries": 0,
            "invalid_replies": 0,
            "cache_hits": 0,
            "failed_origins": {},
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0.0,
        }

    def __repr__(self) -> str:  # never show the key
        return f"OpenAISource(url={self.url!r}, model={self.options.model!r})"

    def settings(self) -> dict:
        # The key's variable name is a setting; the key is not.
        return self.options.model_dump() | {"system_prompt": SYSTEM_PROMPT, "user_prompt": USER_PROMPT}

    # 1. The request, and the cache key that names it.
    def _messages(self, origin: OriginRef, n: int) -> list[dict]:
        with Image.open(origin.image) as image:
            rgb = image.convert("RGB")
        rgb.thumbnail((self.options.image_max_side, self.options.image_max_side))
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=90)
        url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": USER_PROMPT.format(n=n)},
                    {"type": "image_url", "image_url": {"url": url, "detail": self.options.detail}},
                ],
            },
        ]

    def cache_key(self, origin: OriginRef, n: int) -> str:
        o = self.options
        fields = [
            self.url,
            o.model,
            SYSTEM_PROMPT,
            USER_PROMPT,
            origin.sha256,
            n,
            o.temperature,
            o.image_max_side,
            o.detail,
        ]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()

    # 2. One HTTP call, retried on 429 / 5xx / connection errors.
    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        for attempt in range(self.options.max_retries + 1):
            request = urllib.request.Request(
                self.url,
                data=data,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._key}"},
            )
            try:
                with self._lock:
                    self.stats["requests"] += 1
                with urllib.request.urlopen(request, timeout=self.options.timeout_seconds) as response:
                    return json.loads(response.read().decode())
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode(errors="replace")
                if exc.code != 429 and exc.code < 500:
                    raise OripidError(
                        f"prompts source openai: {self.url} answered HTTP {exc.code}: {detail} "
                        "(check base_url, model and the key's permissions)"
                    ) from None
                retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
                error: Exception = RetryableHTTP(f"HTTP {exc.code}: {detail}", retry_after)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                error = RetryableHTTP(f"connection error: {getattr(exc, 'reason', exc)}")
            except json.JSONDecodeError as exc:
                raise InvalidReply(f"response body is not JSON: {exc}") from None
            if attempt == self.options.max_retries:
                raise error
            delay = min(self.options.backoff_seconds * 2**attempt, self.options.max_backoff_seconds)
            delay = max(delay, min(error.retry_after or 0.0, self.options.max_backoff_seconds))
            with self._lock:
                self.stats["retries"] += 1
            log.info("openai: %s; retry %d in %.2fs", error, attempt + 1, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    # 3. One origin: cache, request, schema check, re-ask on a bad reply.
    def prompts_for(self, origin: OriginRef, n: int) -> list[str]:
        cached = self.cache_dir / f"{self.cache_key(origin, n)}.json"
        if cached.is_file():
            with self._lock:
                self.stats["cache_hits"] += 1
            return json.loads(cached.read_text())["prompts"]
        body = {
            "model": self.options.model,
            "messages": self._messages(origin, n),
            "temperature": self.options.temperature,
        }
        if self.options.json_mode:
            body["response_format"] = {"type": "json_object"}
        problem = ""
        for _ in range(self.options.max_invalid + 1):
            try:
                reply = self._post(body)
                self._count_usage(reply.get("usage") or {})
                prompts = validate_reply(reply, n)
            except InvalidReply as exc:
                problem = str(exc)
                with self._lock:
                    self.stats["invalid_replies"] += 1
                log.info("openai: origin %s: invalid reply (%s); asking again", origin.origin_id, problem)
                continue
            tmp = cached.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"prompts": prompts, "usage": reply.get("usage"), "model": reply.get("model")})
            )
            os.replace(tmp, cached)
            return prompts
        raise InvalidReply(problem)

    def _count_usage(self, usage: dict) -> None:
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        cost = (
            prompt_tokens * self.options.input_usd_per_mtok
            + completion_tokens * self.options.output_usd_per_mtok
        ) / 1e6
        with self._lock:
            self.stats["prompt_tokens"] += prompt_tokens
            self.stats["completion_tokens"] += completion_tokens
            self.stats["cost_usd"] = round(self.stats["cost_usd"] + cost, 6)

    def generate(self, origins: list[OriginRef], n: int) -> Iterator[tuple[str, Iterable[str]]]:
        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            futures = {pool.submit(self.prompts_for, origin, n): origin for origin in origins}
            for future in as_completed(futures):
                origin = futures[future]
                try:
                    yield origin.origin_id, future.result()
                except (InvalidReply, RetryableHTTP) as exc:
                    # Recorded against the origin; the run goes on and the checks report it short.
                    self.stats["failed_origins"][origin.origin_id] = str(exc)[:300]
                    yield origin.origin_id, []


def validate_reply(reply: dict, n: int) -> list[str]:
    """The schema: choices[0].message.content is JSON {"prompts": [n unique non-empty strings]}."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise InvalidReply("reply has no choices[0].message.content") from None
    text = (content or "").strip()
    if text.startswith("```"):  # some servers wrap JSON in a code fence despite json mode
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidReply(f"content is not JSON ({exc})") from None
    prompts = value.get("prompts") if isinstance(value, dict) else None
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise InvalidReply('content is not {"prompts": [strings]}')
    cleaned = [" ".join(p.split()) for p in prompts]
    unique = list(dict.fromkeys(p for p in cleaned if p))
    if len(unique) < n:
        raise InvalidReply(f"{len(unique)} unique non-empty prompts, {n} asked")
    return unique[:n]


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None

"""The judges: any OpenAI-compatible server (`openai:MODEL@URL`) or a local GGUF (`gguf:PATH`), with retries.

The HTTP client is the standard library's: one POST to `URL/chat/completions` per judgement, so llama.cpp's
server, vLLM and hosted APIs all work, and nothing beyond Python is needed to judge. The API key comes from an
environment variable and goes only into the Authorization header: no message, log line or file shows it.

Failures come in three kinds. A reply that is no verdict, an HTTP 5xx or 429, or a timeout is worth retrying;
when the retries run out, that one item is recorded as failed and the run goes on. A refused connection means
the server is gone: after the retries the run stops, keeping everything judged so far for `--resume`. A 401,
403 or 404 is a setting to fix, and stops the run at once.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from discopop_cli.core.errors import RunFailure, UserError, first_line
from discopop_cli.core.llama import load_llama
from discopop_cli.eval.judge.answers import llama_threads
from discopop_cli.eval.judge.verdicts import json_schema

RETRY_TEMPERATURE = 0.7
_OPENAI = re.compile(r"^openai:(?P<model>[^@]+)@(?P<url>https?://\S+)$")


class ItemFailure(Exception):
    """This judgement failed (retry it); the run can go on without it."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerDown(Exception):
    """The judge cannot be reached at all."""


@dataclass(frozen=True)
class JudgeSettings:
    spec: str
    max_tokens: int = 512
    timeout: float = 120.0
    retries: int = 2
    retry_wait: float = 0.5
    as_json: bool = False
    api_key_env: str | None = None


class Judge(Protocol):
    name: str
    concurrent: bool  # whether calls may run in several threads at once

    def complete(self, messages: list[dict[str, str]], mode: str, temperature: float = 0.0) -> str: ...

    def close(self) -> None: ...


class OpenAIJudge:
    concurrent = True  # one HTTP request per call, no shared state but the response format (a benign race)

    def __init__(self, model: str, url: str, settings: JudgeSettings, key: str | None) -> None:
        self.model = model
        self.base = url.rstrip("/")
        self.settings = settings
        self._key = key
        # OpenAI and vLLM take the standard `json_schema` response format; llama-cpp-python's server takes only
        # `json_object` with a `schema`. The first is tried, and a 400/422 for it switches to the second.
        self._format = "json_schema"
        host = re.sub(r"^https?://", "", self.base).split("/")[0]
        self.name = f"openai-{model}-{host}"

    def _request(self, path: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read(400).decode("utf-8", "replace").strip().replace("\n", " ")
            if exc.code in (401, 403, 404):
                hint = "check the API key variable" if exc.code != 404 else "check the model name and the URL"
                raise RunFailure(f"judge {self.base} answered HTTP {exc.code} ({detail[:120]}); {hint}") from None
            raise ItemFailure(f"HTTP {exc.code}: {detail[:200]}", exc.code) from None
        except TimeoutError:
            raise ItemFailure(f"no reply within {timeout:g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise ItemFailure(f"no reply within {timeout:g} s") from None
            raise ServerDown(f"{self.base} cannot be reached ({exc.reason})") from None
        except (ConnectionError, OSError) as exc:
            raise ServerDown(f"{self.base}: {first_line(exc)}") from None
        except ValueError:
            raise ItemFailure("the reply is not JSON") from None

    def check_reachable(self) -> None:
        """Before any answer is generated: a judge that cannot be reached is reported now, not after an hour."""
        try:
            self._request("/models", None, timeout=self.settings.timeout)
        except ServerDown as exc:
            raise UserError(
                f"judge {exc}; start the server (e.g. python -m llama_cpp.server --model JUDGE.gguf) "
                "or fix the URL in --judge"
            ) from None
        except ItemFailure as exc:
            if exc.status is None:  # a port that takes the connection and never answers is no judge
                raise UserError(
                    f"judge {self.base} took the connection but gave no HTTP answer ({exc}); check that a chat "
                    "server listens there, or raise --timeout if it is only slow"
                ) from None
            # An HTTP error: it answers; some servers simply have no /models.

    def complete(self, messages: list[dict[str, str]], mode: str, temperature: float = 0.0) -> str:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": self.settings.max_tokens,
        }
        if self.settings.as_json:
            body["response_format"] = self._response_format(mode)
        try:
            reply = self._request("/chat/completions", body, timeout=self.settings.timeout)
        except ItemFailure as exc:
            # llama-cpp-python answers a response format it does not know with a 500 naming the field.
            refused = exc.status in (400, 422, 500) and "response_format" in str(exc)
            if not (self.settings.as_json and self._format == "json_schema" and refused):
                raise
            self._format = "json_object"
            body["response_format"] = self._response_format(mode)
            reply = self._request("/chat/completions", body, timeout=self.settings.timeout)
        try:
            return str(reply["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise ItemFailure("the reply has no choices[0].message.content") from None

    def _response_format(self, mode: str) -> dict[str, Any]:
        if self._format == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "judgement", "schema": json_schema(mode)}}
        return {"type": "json_object", "schema": json_schema(mode)}

    def close(self) -> None:
        pass


class GGUFJudge:
    """A judge model run in this process by llama.cpp, greedy."""

    concurrent = False  # one llama.cpp context: one call at a time

    def __init__(self, path: Path, settings: JudgeSettings) -> None:
        self.settings = settings
        self.name = f"gguf-{path.stem}"
        try:
            self.llm = load_llama(path, n_ctx=4096, **llama_threads())
        except ImportError:
            raise UserError('a gguf: judge needs llama-cpp-python; run: pip install "discopop-cli[gguf]"') from None
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"llama.cpp could not load the judge {path} ({first_line(exc)}); check the file") from None

    def complete(self, messages: list[dict[str, str]], mode: str, temperature: float = 0.0) -> str:
        extra: dict[str, Any] = {}
        if self.settings.as_json:
            extra["response_format"] = {"type": "json_object", "schema": json_schema(mode)}
        try:
            reply = self.llm.create_chat_completion(
                messages=messages, temperature=temperature, max_tokens=self.settings.max_tokens, **extra
            )
        except ValueError as exc:  # e.g. the prompt does not fit the context
            raise ItemFailure(first_line(exc)) from None
        return str(reply["choices"][0]["message"]["content"] or "")

    def close(self) -> None:
        self.llm.close()


def parse_judge(settings: JudgeSettings) -> tuple[str, Any]:
    """Check a --judge spec without contacting or loading anything: ('openai', (model, url)) or ('gguf', path)."""
    spec = settings.spec
    match = _OPENAI.match(spec)
    if match:
        return "openai", (match["model"], match["url"])
    if spec.startswith("gguf:"):
        path = Path(spec[5:])
        if not path.is_file():
            raise UserError(f"--judge {spec}: {path} does not exist; give the path of a judge .gguf file")
        return "gguf", path
    raise UserError(f"--judge {spec!r}: use openai:MODEL@http://HOST:PORT/v1 or gguf:PATH.gguf")


def api_key(settings: JudgeSettings, environ: dict[str, str]) -> str | None:
    if settings.api_key_env is None:
        return environ.get("OPENAI_API_KEY") or None
    value = environ.get(settings.api_key_env)
    if not value:
        raise UserError(f"--api-key-env {settings.api_key_env}: that variable is not set; export it first")
    return value


def open_judge(settings: JudgeSettings, environ: dict[str, str]) -> Judge:
    kind, target = parse_judge(settings)
    if kind == "openai":
        judge = OpenAIJudge(*target, settings, api_key(settings, environ))
        judge.check_reachable()
        return judge
    return GGUFJudge(target, settings)


def ask(
    judge: Judge, messages: list[dict[str, str]], mode: str, parse: Callable[[str], Any], settings: JudgeSettings
) -> tuple[Any, str, int]:
    """(parsed value, raw reply, attempts). Raises ItemFailure when every attempt failed, RunFailure when the
    server stayed unreachable."""
    last = ""
    temperature = 0.0
    for attempt in range(1, settings.retries + 2):
        try:
            reply = judge.complete(messages, mode, temperature)
            value = parse(reply)
            if value is not None:
                return value, reply, attempt
            last = "no verdict in the reply: " + " ".join(reply.split())[:100]
            # Greedy decoding would give the same reply again: the retry samples.
            temperature = RETRY_TEMPERATURE
        except ItemFailure as exc:
            last = str(exc)
        except ServerDown as exc:
            if attempt > settings.retries:
                raise RunFailure(
                    f"the judge stopped answering: {exc}; restart it and run the same command with --resume"
                ) from None
            last = str(exc)
        if attempt <= settings.retries:
            time.sleep(settings.retry_wait * 2 ** (attempt - 1))
    raise ItemFailure(f"{last} (after {settings.retries + 1} attempts)")

"""Where candidates come from: `dir:PATH` (files a person or a program drops there) or `openai:MODEL@URL` (any
OpenAI-compatible chat-completions server: a hosted API, vLLM, or `python -m llama_cpp.server` offline).

The API key, when one is needed, is read from an environment variable named by the user; it goes into the
Authorization header and nowhere else (not the archive, not an error message).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from discopop_cli.core.errors import RunFailure, UserError
from discopop_cli.discover import prompt
from discopop_cli.discover.candidate import Candidate, from_file, from_reply

# A dropped file larger than this is refused unread (the static check would refuse it anyway).
MAX_FILE_BYTES = 64 * 1024


class Proposer(Protocol):
    label: str

    def propose(self, entries: list[dict[str, Any]], generation: int) -> Candidate | None: ...


@dataclass
class DirProposer:
    """The next `.py` file (by name) that the archive has not seen; None once every file has been tried."""

    folder: Path
    label: str = ""

    def propose(self, entries: list[dict[str, Any]], generation: int) -> Candidate | None:
        seen = {e.get("origin") for e in entries}
        for path in sorted(self.folder.glob("*.py")):
            if path.name in seen or not path.is_file():
                continue
            if path.stat().st_size > MAX_FILE_BYTES:
                return Candidate(code="", origin=path.name, thought=f"file of {path.stat().st_size} bytes, unread")
            try:
                return from_file(path.read_text(encoding="utf-8"), path.name)
            except (OSError, UnicodeDecodeError) as exc:
                return Candidate(code="", origin=path.name, thought=f"unreadable: {exc}")
        return None


@dataclass
class OpenAIProposer:
    """One chat completion per generation; JSON-schema structured output where the server accepts it."""

    model: str
    base_url: str
    api_key_env: str
    fitness_label: str
    temperature: float = 0.8
    max_tokens: int = 1024
    timeout: float = 600.0
    label: str = ""
    # Structured output, in the order tried: OpenAI's JSON schema, then llama-cpp-python's `json_object` with a
    # schema; a server that refuses both (HTTP 400, 422 or 500) is asked in plain text and the reply parsed as it comes.
    formats: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"type": "json_schema", "json_schema": {"name": "loss_candidate", "schema": prompt.SCHEMA, "strict": True}},
            {"type": "json_object", "schema": prompt.SCHEMA},
        ]
    )
    last_prompt: list[dict[str, str]] = field(default_factory=list)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _request(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, headers=self._headers())
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (http(s) only, checked)
            return json.loads(response.read().decode("utf-8"))

    def check_reachable(self) -> None:
        """GET /models once before anything is written: a wrong URL or a server not started is one line, exit 2."""
        try:
            self._request("/models", None)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise UserError(
                    f"the proposer at {self.base_url} refused the credentials (HTTP {exc.code}); "
                    f"set the API key in ${self.api_key_env} (or name another variable with --api-key-env)"
                ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(
                f"cannot reach the proposer at {self.base_url} ({reason}); start the server or fix the URL"
            ) from None

    def propose(self, entries: list[dict[str, Any]], generation: int) -> Candidate | None:
        messages = [
            {"role": "system", "content": prompt.system_prompt(self.fitness_label)},
            {"role": "user", "content": prompt.user_prompt(entries)},
        ]
        self.last_prompt = messages
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.formats:
            body["response_format"] = self.formats[0]
        try:
            reply = self._request("/chat/completions", body)
        except urllib.error.HTTPError as exc:
            # This server takes the schema another way, or not at all (llama-cpp-python answers 500 to a
            # response_format it does not know): try the next form; a real fault fails on the plain request too.
            if self.formats and exc.code in (400, 422, 500):
                self.formats.pop(0)
                return self.propose(entries, generation)
            raise RunFailure(
                f"the proposer at {self.base_url} answered HTTP {exc.code}; see the server's log"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RunFailure(f"the proposer at {self.base_url} failed: {getattr(exc, 'reason', exc)}") from None
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise RunFailure(f"the proposer at {self.base_url} sent no chat completion") from None
        return from_reply(text, origin=f"{self.label} generation {generation}")


def parse_proposer(spec: str, *, api_key_env: str, fitness_label: str, temperature: float, max_tokens: int) -> Proposer:
    """`dir:PATH` or `openai:MODEL@URL`, checked (the folder exists, the server answers) before any work."""
    kind, sep, rest = spec.partition(":")
    if kind == "dir" and sep and rest:
        folder = Path(rest).expanduser()
        if not folder.is_dir():
            raise UserError(f"--proposer {spec}: {folder} is not a folder; create it or fix the path")
        return DirProposer(folder, label=spec)
    if kind == "openai" and sep and rest:
        model, at, url = rest.rpartition("@")
        if not at or not model or not url.startswith(("http://", "https://")):
            raise UserError(
                f"--proposer {spec}: expected openai:MODEL@URL with an http(s) URL, "
                "e.g. openai:smollm2@http://127.0.0.1:8080/v1"
            )
        proposer = OpenAIProposer(
            model=model,
            base_url=url.rstrip("/"),
            api_key_env=api_key_env,
            fitness_label=fitness_label,
            temperature=temperature,
            max_tokens=max_tokens,
            label=f"openai:{model}",
        )
        proposer.check_reachable()
        return proposer
    raise UserError(f"--proposer {spec!r}: use dir:PATH or openai:MODEL@URL")

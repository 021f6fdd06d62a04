"""Multimodal-LLM labels (paper Sec. 3.5, 5.2 and App. G) through an OpenAI-compatible endpoint.

Two prompts, both ``role description + main prompt + answer form`` as in App. G:

* captioning: the exemplar patches of one neuron group -> its common features and a caption;
* formation: the exemplars of a group (Group 1) and of its highest-weighted child groups in the
  layer below (Group 2..N) -> each group's common features, how the children's features evolve
  into the parent's, and a caption of that evolution.

`label_run` walks a run's circuit bottom-up: it captions every neuron group (stored as LABELED
``{method: "mllm"}`` with `graphmodel.labels.write_labels`) and explains the formation of every group
that has children (stored as FORMS relationships with `graphmodel.explanations`). What is sent and
stored is documented in docs/labelling.md. The API key is read from an environment variable and is
never printed, logged or put in an error message.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphmodel.explanations import ChildFormation, FormationRecord, GroupInput

METHOD = "mllm"
PROMPT_VERSION = "neurflow-app-g-v1"
URL_ENV = "NEURFLOW_MLLM_URL"
MODEL_ENV = "NEURFLOW_MLLM_MODEL"
KEY_ENV = "NEURFLOW_MLLM_API_KEY"

# ----------------------------------------------------------------------------- the prompts (App. G)
# The wording is the paper's, verbatim; only the line layout of its bullet lists is restored (the
# paper's extraction flattened some bullets into one line) and "→" replaces the typeset arrow.

ROLE_DESCRIPTION = "Act as an Image Captioning Language Model."

MAIN_PROMPT = """# Core Responsibilities:
- Analyze a set of similar images to identify common features.
- Generate descriptive captions that highlight these common features.
- You must adapt to detect both simple and complex features.

# Important notes:
- You don't have to generate captions for every image, focus on the common features.
- Outliers exist in the images, you could ignore them if they are not relevant to the common theme.
- You should describe the images with objective visual features, not subjective (like powerful or \
beautiful or scary etc., because these are only your opinion).
- You should only describe visual features, not the context or the story behind the images.
- You should keep a succinct caption, keep it one or two sentences long, that only describe a few most \
common features.

# Role Summary:
Your role is to provide accurate and coherent captions for a set of similar images by identifying and \
describing common features. These features can range from simple elements like edges and colors to \
complex patterns such as a specific object in a particular setting."""

CAPTION_ANSWER_FORM = """# Answer form:
- Common features: a list of features
- Caption: your caption in one or two sentences"""

FORMATION_ANSWER_FORM = """# Key note of the input:
- There are many different groups of images, make sure you get the number of groups right.
- Each group of images has a common feature.
- The higher level feature is the first group.
- Other groups are lower level features that combine to form the higher level feature of the first group.

# Key note of the output:
- You should not only focus on the common features of the images but also describe how the features \
from the lower level groups combine to form the higher-level feature of the first group.
- You should focus on the common features that shared among both the high and low level.

# Step by step:
- Find the lists of common features in Group 2, ..., N.
- For each feature from those lists: match it with the features in Group 1.
- Some of the features in the lists might have no matches: they might be combined with others to form \
new features, match the features in Group 1 with some simple combination of the features in Group 2, \
..., N (e.g. blue and green → blue-green, multiple curve orientations → a circle, two edges with \
different orientations → an angle, etc.).
- If you don't find any visual features that match, please don't describe features that is not \
presented, instead, you can say "There is no matches".
- From the matched features, derive the common features in Group 1.
- Generate caption for Group 1.

# Answer form:
- Group 1 Common Features: list of common features
- Group 2 Common Features: list of common features
- Group N Common Features: list of common features
Feature Evolution:
- Group 2: has feature A - match feature A in Group 1 (for Group 2 to N, if there is no matches, please \
say "There is no matches")
- Group N: has feature B - match feature B in Group 1
Caption: one or two sentences capturing the common features and their evolution"""


def caption_messages(images: Sequence[str]) -> list[dict]:
    """Chat messages of the captioning prompt. `images` are image URLs (data: URLs when sent)."""
    content: list[dict] = [
        {"type": "text", "text": f"{MAIN_PROMPT}\n\n{CAPTION_ANSWER_FORM}"},
        {"type": "text", "text": f"The set of similar images ({_count(len(images))}):"},
    ]
    content += [_image_part(url) for url in images]
    return [{"role": "system", "content": ROLE_DESCRIPTION}, {"role": "user", "content": content}]


def formation_messages(groups: Sequence[Sequence[str]]) -> list[dict]:
    """Chat messages of the formation prompt: ``groups[0]`` are the parent's image URLs (Group 1),
    ``groups[1:]`` its children's, highest weight first (Group 2..N)."""
    if len(groups) < 2:
        raise ValueError("a formation prompt needs the parent group and at least one child group")
    n = len(groups)
    content: list[dict] = [
        {"type": "text", "text": f"{MAIN_PROMPT}\n\n{FORMATION_ANSWER_FORM}"},
        {
            "type": "text",
            "text": f"There are {n} groups of images (N = {n}). Group 1 is the higher level feature; "
            + (
                "Group 2 is the lower level feature."
                if n == 2
                else f"Groups 2 to {n} are the lower level features."
            ),
        },
    ]
    for i, urls in enumerate(groups, start=1):
        content.append({"type": "text", "text": f"Group {i} ({_count(len(urls))}):"})
        content += [_image_part(url) for url in urls]
    return [{"role": "system", "content": ROLE_DESCRIPTION}, {"role": "user", "content": content}]


def _count(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def png_data_url(data: bytes) -> str:
    """A ``data:image/png;base64,...`` URL; other image formats are converted to PNG first."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        from PIL import Image

        buffer = io.BytesIO()
        with Image.open(io.BytesIO(data)) as image:
            image.convert("RGB").save(buffer, format="PNG")
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def render_messages(messages: Sequence[dict]) -> str:
    """The messages as readable text: every text part, and one ``[image <url>]`` line per image."""
    lines = []
    for message in messages:
        lines.append(f"--- {message['role']}")
        content = message["content"]
        for part in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            if part["type"] == "text":
                lines.append(part["text"])
            else:
                url = part["image_url"]["url"]
                lines.append(f"[image {url[:40] + '...' if url.startswith('data:') else url}]")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- errors


class MllmError(RuntimeError):
    """The labeller cannot go on; the message says what to do."""


class MllmConfigError(MllmError):
    """No endpoint or model configured, or a bad setting."""


class MllmUnreachableError(MllmError):
    """The endpoint cannot be reached, or did not answer in time."""


class MllmAuthError(MllmError):
    """The endpoint refused the API key (HTTP 401/403)."""


class MllmResponseError(MllmError):
    """The endpoint answered something that is not an OpenAI-compatible chat completion."""


class MllmAnswerError(MllmError):
    """The model's text does not follow the answer form (a required part is missing)."""

    def __init__(self, message: str, answer: str = ""):
        super().__init__(message)
        self.answer = answer


# ---------------------------------------------------------------------------------------- client


@dataclass
class MllmConfig:
    url: str  # base URL of an OpenAI-compatible API (…/v1) or the full …/chat/completions URL
    model: str
    api_key_env: str = KEY_ENV  # the environment variable holding the key (the key itself never stored)
    timeout: float = 120.0  # seconds per request
    retries: int = 4  # extra attempts after a 429, a 5xx or a dropped connection
    backoff: float = 2.0  # seconds before the first retry, doubled each time (Retry-After wins)
    max_backoff: float = 60.0
    temperature: float | None = None  # None: the server's default
    max_tokens: int | None = None  # None: the server's default

    @classmethod
    def from_env(
        cls,
        url: str | None = None,
        model: str | None = None,
        api_key_env: str | None = None,
        **options: Any,
    ) -> MllmConfig:
        """Arguments first, then NEURFLOW_MLLM_URL / NEURFLOW_MLLM_MODEL; raises MllmConfigError."""
        url = url or os.environ.get(URL_ENV)
        model = model or os.environ.get(MODEL_ENV)
        if not url:
            raise MllmConfigError(
                f"no multimodal LLM endpoint: set {URL_ENV} or pass --url (the base URL of an "
                "OpenAI-compatible API, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1)"
            )
        if not url.startswith(("http://", "https://")):
            raise MllmConfigError(f"the endpoint URL {url!r} must start with http:// or https://")
        if not model:
            raise MllmConfigError(f"no model name: set {MODEL_ENV} or pass --model (e.g. gpt-4o)")
        return cls(url=url, model=model, api_key_env=api_key_env or KEY_ENV, **options)

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None


_RETRY_STATUS = {408, 429}


class MllmClient:
    """POSTs chat completions; retries 429/5xx/dropped connections with exponential backoff."""

    def __init__(self, config: MllmConfig, *, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self._sleep = sleep
        self.requests = 0  # HTTP requests sent, retries included

    # -- errors -------------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        key = self.config.api_key()
        text = " ".join(str(text).split())
        if key:
            text = text.replace(key, "***")
        return text[:400]

    def _server_message(self, body: bytes) -> str:
        try:
            data = json.loads(body)
            error = data.get("error", data) if isinstance(data, dict) else data
            message = error.get("message", error) if isinstance(error, dict) else error
            return self._redact(str(message))
        except (ValueError, AttributeError):
            return self._redact(body.decode("utf-8", "replace"))

    def _http_error(self, status: int, body: bytes) -> MllmError:
        cfg = self.config
        if status in (401, 403):
            state = "is set" if cfg.api_key() else "is not set"
            return MllmAuthError(
                f"the endpoint {cfg.endpoint} refused the request with HTTP {status} (not authorised): "
                f"put a valid API key into the environment variable {cfg.api_key_env} (it {state}), or "
                "name another variable with --api-key-env"
            )
        message = self._server_message(body)
        if status == 404:
            return MllmConfigError(
                f"HTTP 404 from {cfg.endpoint}: {message or 'not found'}; --url / {URL_ENV} should be the "
                f"API's base URL (ending in /v1 for most servers) and --model / {MODEL_ENV} a model it "
                f"serves (now {cfg.model!r})"
            )
        if status in (400, 413, 415, 422):
            return MllmResponseError(
                f"the endpoint {cfg.endpoint} rejected the request with HTTP {status}: {message}; check "
                f"that the model {cfg.model!r} accepts images, or send fewer with --exemplars"
            )
        return MllmResponseError(f"HTTP {status} from {cfg.endpoint}: {message}")

    # -- transport ----------------------------------------------------------------------------
    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.config.max_backoff)
            except ValueError:
                pass
        return min(self.config.backoff * (2**attempt), self.config.max_backoff)

    def post(self, body: dict) -> dict:
        """POST `body` to the chat-completions endpoint and return the decoded JSON answer."""
        cfg = self.config
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = cfg.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(cfg.retries + 1):
            request = urllib.request.Request(cfg.endpoint, data=data, headers=headers, method="POST")
            self.requests += 1
            retry_after = None
            try:
                with urllib.request.urlopen(request, timeout=cfg.timeout) as response:
                    raw = response.read()
                return self._decode(raw)
            except urllib.error.HTTPError as exc:
                body_bytes = exc.read() if exc.fp is not None else b""
                if exc.code in _RETRY_STATUS or exc.code >= 500:
                    last = f"HTTP {exc.code} {self._server_message(body_bytes)}".strip()
                    retry_after = exc.headers.get("Retry-After") if exc.headers else None
                else:
                    raise self._http_error(exc.code, body_bytes) from None
            except urllib.error.URLError as exc:
                reason = exc.reason
                if isinstance(reason, TimeoutError):
                    last = f"no answer within {cfg.timeout:g} s"
                elif isinstance(reason, ConnectionResetError | ConnectionAbortedError):
                    last = f"connection dropped ({reason})"
                else:
                    raise MllmUnreachableError(
                        f"cannot reach the multimodal LLM endpoint {cfg.endpoint}: {self._redact(reason)}; "
                        f"check --url / {URL_ENV} and that the server runs and is reachable from here"
                    ) from None
            except TimeoutError:
                last = f"no answer within {cfg.timeout:g} s"
            except (ConnectionResetError, ConnectionAbortedError, http.client.RemoteDisconnected) as exc:
                last = f"connection dropped ({type(exc).__name__})"
            if attempt < cfg.retries:
                self._sleep(self._delay(attempt, retry_after))
        hint = "raise --timeout" if last.startswith("no answer") else "try again later"
        raise MllmUnreachableError(
            f"the endpoint {cfg.endpoint} failed {cfg.retries + 1} times, last with: {last}; {hint} "
            "(or raise --retries)"
        )

    def _decode(self, raw: bytes) -> dict:
        try:
            answer = json.loads(raw)
        except ValueError:
            raise MllmResponseError(
                f"the endpoint {self.config.endpoint} answered something that is not JSON "
                f"({self._redact(raw[:120].decode('utf-8', 'replace'))!r}); is --url an OpenAI-compatible "
                "API (its base URL, e.g. .../v1)?"
            ) from None
        if not isinstance(answer, dict):
            raise MllmResponseError(
                f"the endpoint {self.config.endpoint} answered JSON that is not an object"
            )
        return answer

    def complete(self, messages: list[dict]) -> str:
        """The text of the first choice of a chat completion of `messages`."""
        cfg = self.config
        body: dict[str, Any] = {"model": cfg.model, "messages": messages}
        if cfg.temperature is not None:
            body["temperature"] = cfg.temperature
        if cfg.max_tokens is not None:
            body["max_tokens"] = cfg.max_tokens
        answer = self.post(body)
        try:
            choice = answer["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            if "error" in answer:
                raise MllmResponseError(
                    f"the endpoint {cfg.endpoint} answered with an error: "
                    f"{self._server_message(json.dumps(answer).encode())}"
                ) from None
            raise MllmResponseError(
                f"malformed answer from {cfg.endpoint}: no choices[0].message (keys: {sorted(answer)}); "
                "is it an OpenAI-compatible chat-completions endpoint?"
            ) from None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # some servers answer with content parts
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str) or not content.strip():
            refusal = message.get("refusal") if isinstance(message, dict) else None
            reason = f"the model refused: {self._redact(refusal)}" if refusal else "the answer has no text"
            raise MllmAnswerError(f"{reason} (finish_reason={choice.get('finish_reason')!r})")
        return content


# --------------------------------------------------------------------------------------- parsing


@dataclass
class CaptionAnswer:
    caption: str
    features: list[str]
    answer: str  # the raw text


@dataclass
class FormationAnswer:
    caption: str
    features: dict[int, list[str]]  # group number (1 = parent) -> its common features
    evolution: dict[int, str]  # group number (2..N) -> its feature-evolution line
    evolution_text: str  # the whole Feature Evolution part
    answer: str


_SEP = r"\s*(?:[:：]|\s[-–—]\s)\s*"
_BULLET = re.compile(r"^\s*(?:[-*•+>]|\d+[.)])\s+")
_HEADER_MARKS = re.compile(r"^\s*#+\s*")
_EMPHASIS = re.compile(r"\*\*|__|(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w)|`")
_GROUP_FEATURES = re.compile(
    rf"^(?:group\s*(\d+)\s*(?:'s\s*)?(?:common\s+)?features?|(?:common\s+)?features?\s+(?:of|in|for)\s+group\s*(\d+))(?:{_SEP}(.*))?$",
    re.I,
)
_COMMON = re.compile(rf"^common\s+(?:visual\s+)?features?(?:{_SEP}(.*))?$", re.I)
_CAPTION = re.compile(rf"^caption(?:\s+(?:for|of)\s+group\s*1)?(?:{_SEP}(.*))?$", re.I)
_EVOLUTION = re.compile(rf"^features?\s+evolution(?:{_SEP}(.*))?$", re.I)
_ANSWER_FORM = re.compile(r"^answer\s+form\s*:?\s*$", re.I)
_GROUP_ENTRY = re.compile(rf"^groups?\s*(\d+(?:\s*(?:,|&|and|\+)\s*(?:group\s*)?\d+)*)(?:{_SEP}(.*))$", re.I)
_NO_MATCH = re.compile(r"\bno\s+match", re.I)


def _clean_line(line: str) -> str:
    line = _HEADER_MARKS.sub("", line)
    line = _BULLET.sub("", line)
    line = _EMPHASIS.sub("", line)
    return line.strip()


def _lines(text: str) -> list[str]:
    text = re.sub(r"```[a-zA-Z]*", "", text)
    return [_clean_line(line) for line in text.replace("\r", "").split("\n")]


def _items(chunks: list[str]) -> list[str]:
    """A feature list: one item per line, or a single line split at semicolons or commas."""
    chunks = [c.strip() for c in chunks if c.strip()]
    if len(chunks) == 1:
        sep = ";" if ";" in chunks[0] else ","
        chunks = chunks[0].split(sep)
    return [c.strip().strip(".").strip() for c in chunks if c.strip().strip(".").strip()]


def _sentence(chunks: list[str]) -> str:
    text = " ".join(c.strip() for c in chunks if c.strip())
    return text.strip().strip('"“”').strip()


def _sections(text: str, headers: list[tuple[str, re.Pattern]]) -> list[tuple[str, tuple, list[str]]]:
    """Split the answer into (name, match groups, lines) at lines that match a header.

    A blank line after some content closes a section: text after it, up to the next header, is not
    part of any (a caption is not continued by a closing remark).
    """
    sections: list[tuple[str, tuple, list[str]]] = []
    closed = True
    for line in _lines(text):
        if not line:
            if sections and any(sections[-1][2]):
                closed = True
            continue
        if _ANSWER_FORM.match(line):
            continue
        for name, pattern in headers:
            m = pattern.match(line)
            if m:
                sections.append((name, m.groups(), [m.groups()[-1] or ""]))
                closed = False
                break
        else:
            if sections and not closed:
                sections[-1][2].append(line)
    return sections


def _from_json(text: str) -> dict | None:
    match = re.search(r"\{.*\}", text, re.S)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return None
    return (
        {re.sub(r"[\s_-]+", " ", str(k)).strip().lower(): v for k, v in data.items()}
        if isinstance(data, dict)
        else None
    )


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return _items([str(value)]) if value else []


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:200] + "..."


def parse_caption_answer(text: str) -> CaptionAnswer:
    """Common features and caption from an answer to the captioning prompt.

    Tolerates bullets, markdown headers and emphasis, features inline or one per line, the caption on
    its header line or below it, reasoning before the answer form (the last part of each kind wins),
    and a JSON object. Raises MllmAnswerError when there is no caption.
    """
    data = _from_json(text)
    if data and data.get("caption"):
        return CaptionAnswer(str(data["caption"]).strip(), _as_list(data.get("common features")), text)
    caption, features = None, []
    for name, _groups, lines in _sections(text, [("features", _COMMON), ("caption", _CAPTION)]):
        # The last non-empty part wins: a model that reasons first puts the answer form at the end.
        if name == "features" and _items(lines):
            features = _items(lines)
        elif name == "caption" and _sentence(lines):
            caption = _sentence(lines)
    if not caption:
        raise MllmAnswerError(
            f"the answer has no 'Caption:' part (the answer form asks for 'Common features: ...' and "
            f"'Caption: ...'); it was: {_excerpt(text)!r}",
            text,
        )
    return CaptionAnswer(caption, features, text)


def parse_formation_answer(text: str, groups: int) -> FormationAnswer:
    """Per-group common features, feature evolution and caption from an answer to the formation prompt.

    `groups` is N (the parent plus its children). Required: a caption and a Feature Evolution part that
    is not empty; a child without its own evolution line is left out of ``evolution`` (the whole part
    is kept as ``evolution_text``). Raises MllmAnswerError naming the missing part.
    """
    headers = [
        ("features", _GROUP_FEATURES),
        ("evolution", _EVOLUTION),
        ("caption", _CAPTION),
    ]
    features: dict[int, list[str]] = {}
    evolution: dict[int, str] = {}
    evolution_lines: list[str] = []
    caption = None
    seen_evolution = False
    for name, groups_matched, lines in _sections(text, headers):
        # The last non-empty part of each kind wins (the answer form closes a reasoning answer).
        if name == "features" and _items(lines):
            features[int(groups_matched[0] or groups_matched[1])] = _items(lines)
        elif name == "evolution":
            seen_evolution = True
            if any(lines):
                evolution_lines = [line for line in lines if line]
        elif name == "caption" and _sentence(lines):
            caption = _sentence(lines)
    current: list[int] = []
    for line in evolution_lines:
        m = _GROUP_ENTRY.match(line)
        if m:
            current = [int(n) for n in re.findall(r"\d+", m.group(1))]
            for n in current:
                evolution[n] = (evolution.get(n, "") + " " + m.group(2)).strip()
        elif current:
            for n in current:
                evolution[n] = (evolution[n] + " " + line).strip()
    evolution = {n: e for n, e in evolution.items() if 2 <= n <= groups}
    missing = []
    if not seen_evolution or not evolution_lines:
        missing.append("'Feature Evolution:'")
    if not caption:
        missing.append("'Caption:'")
    if missing:
        raise MllmAnswerError(
            f"the answer has no {' and no '.join(missing)} part (the answer form asks for 'Group k Common "
            f"Features:' lines, 'Feature Evolution:' with one line per Group 2..{groups}, and 'Caption:'); "
            f"it was: {_excerpt(text)!r}",
            text,
        )
    return FormationAnswer(caption, features, evolution, " ".join(evolution_lines), text)


def short_caption(caption: str, limit: int = 80) -> str:
    """The concept name of a caption: its first sentence, without the final stop, at most `limit` chars."""
    text = " ".join(caption.split())
    first = re.split(r"(?<=[.!?])\s+", text, maxsplit=1)[0].rstrip(".!? ")
    if len(first) > limit:
        cut = first[:limit].rsplit(" ", 1)[0]
        first = cut if cut else first[:limit]
    return first.rstrip(",;: ") or text[:limit]


# ------------------------------------------------------------------------------------ the walk


@dataclass
class LabelRunResult:
    run_id: str
    labels: int = 0  # groups captioned (LABELED written)
    explanations: int = 0  # groups whose formation was explained
    forms: int = 0  # FORMS relationships written
    skipped: list[str] = field(default_factory=list)  # "ng_id: why", not sent (no stored images ...)
    failed: list[str] = field(default_factory=list)  # "ng_id: why", the answer never fit the form
    requests: int = 0
    seconds: float = 0.0


def _children_of(
    group: GroupInput, by_id: dict[str, GroupInput], limit: int
) -> list[tuple[GroupInput, float]]:
    """The top-`limit` child groups of the layer below by FEEDS weight; only positive weights (a child
    with negative W suppresses the parent's concept, it does not form it)."""
    out = []
    for child_id, weight in group.incoming:
        child = by_id.get(child_id)
        if child is not None and weight > 0 and child.depth == group.depth + 1:
            out.append((child, weight))
    return out[:limit]


def _uris(group: GroupInput, n: int) -> list[tuple[str, str]]:
    return [(pid, uri) for pid, uri in group.exemplars if uri][:n]


def plan(groups: list[GroupInput], exemplars: int, children: int, formation: bool) -> list[tuple]:
    """The requests of a run, in order: ("caption", group, None) and ("formation", parent, [(child, w)])."""
    by_id = {g.ng_id: g for g in groups}
    steps: list[tuple] = []
    for layer_depth in sorted({g.depth for g in groups}, reverse=True):
        layer = [g for g in groups if g.depth == layer_depth]
        steps += [("caption", g, None) for g in layer]
        if formation:
            for g in layer:
                kids = _children_of(g, by_id, children)
                if kids:
                    steps.append(("formation", g, kids))
    return steps


def dry_run(
    groups: list[GroupInput], *, exemplars: int = 5, children: int = 3, formation: bool = True
) -> list[str]:
    """The prompts `label_run` would send, as text with one ``[image <uri>]`` line per image."""
    out = []
    for kind, group, kids in plan(groups, exemplars, children, formation):
        if kind == "caption":
            urls = [uri for _, uri in _uris(group, exemplars)]
            out.append(f"=== caption {group.ng_id}\n{render_messages(caption_messages(urls))}")
        else:
            sets = [[uri for _, uri in _uris(g, exemplars)] for g in [group] + [k for k, _ in kids]]
            names = ", ".join(f"{k.ng_id} (W={w:.4g})" for k, w in kids)
            out.append(
                f"=== formation {group.ng_id} from {names}\n{render_messages(formation_messages(sets))}"
            )
    return out


def label_run(
    driver,
    run_id: str,
    client: MllmClient,
    fetch: Callable[[str], bytes],
    *,
    exemplars: int = 5,
    children: int = 3,
    formation: bool = True,
    reask: int = 1,
    echo: Callable[[str], None] = lambda _line: None,
) -> LabelRunResult:
    """Caption every neuron group of `run_id` and explain the formation of every group with children.

    Bottom layer first; the labels and explanations gathered so far are written after each layer (each
    write replaces the run's earlier "mllm" ones), so an interrupted walk keeps the finished layers.
    `fetch(uri)` returns a patch's PNG. An answer that misses a required part is asked again `reask`
    times, then the group is listed in ``failed`` and the walk goes on; endpoint errors (unreachable,
    401, not OpenAI-compatible) stop it.
    """
    from graphmodel.explanations import labelling_inputs, write_explanations
    from graphmodel.labels import write_labels

    started = time.perf_counter()
    if exemplars < 1 or children < 1:
        raise ValueError("exemplars and children must be at least 1")
    groups = labelling_inputs(driver, run_id)
    result = LabelRunResult(run_id)
    if not groups:
        echo(f"run {run_id} has no neuron groups: nothing to label")
        return result
    walk = _Walk(client, fetch, exemplars, reask, echo, result)
    steps = plan(groups, exemplars, children, formation)
    echo(
        f"run {run_id}: {len(groups)} neuron groups in {len({g.layer for g in groups})} layers, "
        f"{len(steps)} requests to {client.config.model} at {client.config.endpoint}"
    )
    for i, (kind, group, kids) in enumerate(steps, start=1):
        walk.prefix = f"[{i}/{len(steps)}] {group.ng_id.removeprefix(run_id + '/')}"
        if kind == "caption":
            walk.caption(group)
        else:
            walk.formation(group, kids)
        if i == len(steps) or steps[i][1].layer != group.layer:  # the layer is done: store it
            result.labels = write_labels(driver, run_id, METHOD, walk.labels)
            result.explanations, result.forms = write_explanations(driver, run_id, METHOD, walk.explanations)
    result.requests = client.requests
    result.seconds = time.perf_counter() - started
    return result


class _Walk:
    """The requests of `label_run`, one group at a time, with the answers gathered so far."""

    def __init__(self, client, fetch, exemplars, reask, echo, result: LabelRunResult):
        self.client, self.fetch, self.exemplars, self.reask = client, fetch, exemplars, reask
        self.echo, self.result = echo, result
        self.labels: list = []
        self.explanations: list[FormationRecord] = []
        self.cache: dict[str, str] = {}  # patch id -> data URL (a patch can serve several prompts)
        self.prefix = ""

    def images(self, group: GroupInput) -> list[str]:
        urls = []
        for pid, uri in _uris(group, self.exemplars):
            if pid not in self.cache:
                self.cache[pid] = png_data_url(self.fetch(uri))
            urls.append(self.cache[pid])
        return urls

    def ask(self, messages: list[dict], parse: Callable[[str], Any]) -> Any:
        for attempt in range(self.reask + 1):
            text = self.client.complete(messages)
            try:
                return parse(text)
            except MllmAnswerError as exc:
                if attempt == self.reask:
                    raise
                self.echo(f"{self.prefix}: the answer did not fit the form ({exc}); asking again")
        raise AssertionError("unreachable")

    def caption(self, group: GroupInput) -> None:
        from graphmodel.records import LabelRecord

        t0 = time.perf_counter()
        urls = self.images(group)
        if not urls:
            self.result.skipped.append(f"{group.ng_id}: none of its exemplar patches has a stored image")
            self.echo(f"{self.prefix}: skipped, no exemplar patch has a stored image")
            return
        try:
            parsed = self.ask(caption_messages(urls), parse_caption_answer)
        except MllmAnswerError as exc:
            self.result.failed.append(f"{group.ng_id} (caption): {exc}")
            self.echo(f"{self.prefix}: FAILED, {exc}")
            return
        concept = short_caption(parsed.caption)
        details = {
            "caption": parsed.caption,
            "common_features": parsed.features,
            "answer": parsed.answer,
            "exemplars": [pid for pid, _ in _uris(group, self.exemplars)],
            "model": self.client.config.model,
            "prompt": PROMPT_VERSION,
        }
        self.labels.append(LabelRecord(group.ng_id, concept, 1.0, METHOD, rank=1, details=details))
        self.echo(f"{self.prefix}: {concept!r} ({time.perf_counter() - t0:.1f} s)")

    def formation(self, group: GroupInput, kids: list[tuple[GroupInput, float]]) -> None:
        t0 = time.perf_counter()
        sets = [self.images(g) for g in [group] + [k for k, _ in kids]]
        if not all(sets):
            self.result.skipped.append(f"{group.ng_id} (formation): a group has no stored patch image")
            self.echo(f"{self.prefix}: formation skipped, a group has no stored patch image")
            return
        try:
            parsed = self.ask(formation_messages(sets), lambda text: parse_formation_answer(text, len(sets)))
        except MllmAnswerError as exc:
            self.result.failed.append(f"{group.ng_id} (formation): {exc}")
            self.echo(f"{self.prefix}: formation FAILED, {exc}")
            return
        self.explanations.append(
            _formation_record(group, kids, parsed, self.client.config.model, self.exemplars)
        )
        names = ", ".join("/".join(k.ng_id.rsplit("/", 2)[-2:]) for k, _ in kids)
        self.echo(f"{self.prefix}: formation from {names} ({time.perf_counter() - t0:.1f} s)")


def _formation_record(
    group: GroupInput, kids: list[tuple[GroupInput, float]], parsed: FormationAnswer, model: str, n: int
) -> FormationRecord:
    children = []
    for rank, (kid, weight) in enumerate(kids, start=1):
        line = parsed.evolution.get(rank + 1)
        children.append(
            ChildFormation(
                kid.ng_id,
                rank,
                weight,
                parsed.features.get(rank + 1, []),
                line,
                matched=not (line and _NO_MATCH.search(line)),
            )
        )
    return FormationRecord(
        group.ng_id,
        METHOD,
        parsed.caption,
        parsed.features.get(1, []),
        children,
        details={
            "answer": parsed.answer,
            "evolution": parsed.evolution_text,
            "model": model,
            "prompt": PROMPT_VERSION,
            "exemplars": {g.ng_id: [pid for pid, _ in _uris(g, n)] for g in [group] + [k for k, _ in kids]},
        },
    )

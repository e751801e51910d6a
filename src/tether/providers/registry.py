"""Which providers serve which model names.

A full model name is ``<provider>/<model>`` (``openai/gpt-4o-mini``,
``anthropic/claude-sonnet-4-5``); ``demo`` is always there. Providers come
from the environment and from a TOML file:

- ``TETHER_OPENAI_BASE_URL`` / ``TETHER_OPENAI_API_KEY`` (either one; the URL
  defaults to OpenAI's) and ``TETHER_OPENAI_MODELS`` (comma-separated) give
  the ``openai`` provider; ``TETHER_OPENAI_API=responses`` makes it speak the
  Responses API (``POST /responses``) rather than Chat Completions (``chat``,
  the default);
- ``TETHER_ANTHROPIC_API_KEY`` (+ ``TETHER_ANTHROPIC_BASE_URL``,
  ``TETHER_ANTHROPIC_MODELS``) gives the ``anthropic`` provider;
- the file named by ``TETHER_CONFIG`` (or passed explicitly) lists upstreams::

    [[upstreams]]
    name = "local"                 # the prefix of its model names
    kind = "openai"                # Chat Completions; or "openai-responses" (the
                                   # Responses API), "anthropic" (default: the name,
                                   # if it is one)
    base_url = "http://localhost:11434/v1"
    api_key_env = "OLLAMA_KEY"     # or api_key = "..." (optional for kind openai)
    models = ["llama3.2", "qwen3"]
    # optional: timeout = 120.0 (read timeout, s), headers = {...},
    #           extra_body = {...}, max_tokens = 8192 (anthropic),
    #           attachments = ["image/*", "application/pdf"] (the media types its
    #           models take; default: its kind's, [] for none)
    #           context_tokens = 100000 (see below)

  An upstream in the file wins over the environment variables for its name.

  ``context_tokens`` is the context budget of the upstream's models: one
  number for all of them, or a table per model (``context_tokens =
  {"llama3.2" = 8000, "qwen3" = 32000}``; a model not in it has none). A
  session's run sends its model the branch without the oldest turns that
  would take its estimated size past the budget (tether.agents.context_budget
  says how it estimates, and what always stays).

An upstream configured without a model list is asked for its models (``GET
/models``; Anthropic's ``/v1/models``, page by page) at start and then every
``models_refresh`` seconds (``tether serve --models-refresh``), and then
accepts those (tether.providers.discovery). Until a first answer it accepts any
model name under its prefix (handy for OpenRouter); with a list configured it
accepts only those and is never asked.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from tether.providers._http import HTTPProvider, Secret
from tether.providers.anthropic import ANTHROPIC_BASE_URL, AnthropicProvider
from tether.providers.anthropic import MEDIA_TYPES as ANTHROPIC_MEDIA_TYPES
from tether.providers.base import Provider
from tether.providers.demo import DemoModel
from tether.providers.discovery import ModelDiscovery
from tether.providers.openai import MEDIA_TYPES as OPENAI_MEDIA_TYPES
from tether.providers.openai import OPENAI_BASE_URL, OpenAIProvider
from tether.providers.openai_responses import OpenAIResponsesProvider
from tether.providers.redaction import check_credential

#: The upstream kinds of the config file, and the provider class of each.
PROVIDER_KINDS: dict[str, type[OpenAIProvider | AnthropicProvider]] = {
    "openai": OpenAIProvider,
    "openai-responses": OpenAIResponsesProvider,
    "anthropic": AnthropicProvider,
}
KINDS = tuple(PROVIDER_KINDS)
#: ``TETHER_OPENAI_API`` -> the wire the ``openai`` provider speaks.
OPENAI_APIS: dict[str, type[OpenAIProvider]] = {
    "chat": OpenAIProvider,
    "responses": OpenAIResponsesProvider,
}
_UPSTREAM_KEYS = {
    "name",
    "kind",
    "base_url",
    "api_key",
    "api_key_env",
    "models",
    "timeout",
    "headers",
    "extra_body",
    "max_tokens",
    "attachments",
    "context_tokens",
}
#: The media types of attachments the demo model takes (and ignores): an OpenAI model's.
DEMO_MEDIA_TYPES = OPENAI_MEDIA_TYPES
#: A context budget as configured: tokens for every model, or per model name.
Budget = int | dict[str, int]


class UnknownModel(LookupError):
    """No provider serves the requested model name."""

    def __init__(self, model: str, available: Iterable[str], hint: str = "") -> None:
        self.model = model
        self.available = list(available)
        listed = ", ".join(self.available) if self.available else "none"
        message = f"unknown model {model!r}"
        if hint:
            message += f" ({hint})"
        super().__init__(f"{message}; available models: {listed}")


class ConfigError(ValueError):
    """The provider configuration (environment or TOML file) is invalid.

    Messages name variables and fields, never their values. A key with a
    control character in it (the newline a key file ends with) is refused,
    not stripped: what is configured is what is sent.
    """


class ProviderRegistry:
    """Model names to providers. ``demo`` is always registered."""

    def __init__(
        self,
        providers: Iterable[Provider] = (),
        *,
        demo: Provider | None = None,
        attachments: Mapping[str, Iterable[str]] | None = None,
        context_tokens: Mapping[str, Budget] | None = None,
        models_refresh: float | None = None,
    ) -> None:
        """``context_tokens``: provider name -> the context budget of its models.

        ``models_refresh``: seconds between model discoveries of the upstreams
        configured without a model list (0: at start only; None: never), once
        :meth:`start_discovery` is called.
        """
        self._providers: dict[str, Provider] = {}
        self._models_refresh = models_refresh
        self._discovery: ModelDiscovery | None = None
        #: Provider name -> the media types its models take, where configured.
        self._media_types = {k: tuple(v) for k, v in (attachments or {}).items()}
        self._budgets = dict(context_tokens or {})
        self.add(demo if demo is not None else DemoModel())
        for provider in providers:
            self.add(provider)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        config_path: str | os.PathLike[str] | None = None,
        *,
        models_refresh: float | None = None,
    ) -> ProviderRegistry:
        """Providers from ``env`` (default ``os.environ``) and the TOML config file.

        The file is ``config_path`` if given, else ``$TETHER_CONFIG`` if set.
        Raises ConfigError on an invalid configuration. ``models_refresh``: as
        for the constructor.
        """
        env = os.environ if env is None else env
        path = config_path if config_path is not None else env.get("TETHER_CONFIG") or None
        # Providers built before a ConfigError have opened no connection yet:
        # dropping them is enough.
        found = _from_file(Path(path), env) if path is not None else _FileUpstreams([], {}, {})
        names = {p.name for p in found.providers}
        providers = found.providers + [p for p in _from_env(env) if p.name not in names]
        return cls(
            providers,
            attachments=found.media_types,
            context_tokens=found.budgets,
            models_refresh=models_refresh,
        )

    def add(self, provider: Provider) -> None:
        """Register ``provider`` under its name; ValueError if the name is taken."""
        name = provider.name
        if not name or "/" in name:
            raise ValueError(f"invalid provider name {name!r}")
        if name in self._providers:
            raise ValueError(f"a provider named {name!r} is already registered")
        self._providers[name] = provider

    def get(self, name: str) -> Provider:
        """The provider named ``name`` (KeyError if there is none)."""
        return self._providers[name]

    @property
    def providers(self) -> list[Provider]:
        return list(self._providers.values())

    def secrets(self) -> list[Secret]:
        """Every credential the providers send upstream (for redacting logs)."""
        return [
            s for p in self._providers.values() if isinstance(p, HTTPProvider) for s in p.secrets
        ]

    def context_budget(self, provider: Provider, model: str) -> int | None:
        """The context budget of ``provider``'s ``model`` (as :meth:`resolve` names it), if any."""
        budget = self._budgets.get(provider.name)
        return budget.get(model) if isinstance(budget, dict) else budget

    def list_models(self) -> list[str]:
        """Full names of every listed model, ``demo`` first."""
        out: list[str] = []
        for name, provider in self._providers.items():
            for model in provider.models():
                out.append(name if model == name else f"{name}/{model}")
        return out

    def media_types(self, provider: Provider) -> tuple[str, ...]:
        """The media types of attachments ``provider``'s models take (``image/*`` patterns).

        The upstream's ``attachments`` in the config file, else its kind's:
        what the provider's format can carry. Other providers take none.
        """
        configured = self._media_types.get(provider.name)
        if configured is not None:
            return configured
        if isinstance(provider, AnthropicProvider):
            return ANTHROPIC_MEDIA_TYPES
        if isinstance(provider, OpenAIProvider):
            return OPENAI_MEDIA_TYPES
        if isinstance(provider, DemoModel):
            return DEMO_MEDIA_TYPES
        return ()

    def resolve(self, model: str) -> tuple[Provider, str]:
        """``(provider, model name for that provider)`` for a full model name.

        ``openai/gpt-4o-mini`` -> (the openai provider, ``gpt-4o-mini``);
        ``demo`` -> (the demo model, ``demo``). A name without a known prefix
        is also accepted when exactly one provider lists it (``gpt-4o-mini``).
        Raises UnknownModel otherwise.
        """
        model = model.strip() if isinstance(model, str) else ""
        if not model:
            raise UnknownModel(model, self.list_models(), "empty model name")
        # "demo": a provider whose one model bears its own name.
        provider = self._providers.get(model)
        if provider is not None and model in provider.models():
            return provider, model
        prefix, sep, rest = model.partition("/")
        provider = self._providers.get(prefix) if sep else None
        if provider is not None and rest:
            listed = provider.models()
            if not listed or rest in listed:
                return provider, rest
        # A bare (or foreign-prefixed, e.g. OpenRouter's "openai/gpt-4o") name.
        owners = [p for p in self._providers.values() if model in p.models()]
        if len(owners) == 1:
            return owners[0], model
        hint = ""
        if len(owners) > 1:
            hint = "ambiguous: served by " + ", ".join(p.name for p in owners)
        elif provider is not None:
            hint = f"provider {prefix!r} does not list {rest!r}"
        raise UnknownModel(model, self.list_models(), hint)

    async def start_discovery(self) -> None:
        """Ask the upstreams without a configured model list for theirs, now and then.

        Returns after the first round (or :data:`discovery.START_WAIT`);
        :meth:`aclose` stops it. Nothing happens without ``models_refresh``.
        """
        if self._models_refresh is None or self._discovery is not None:
            return
        http = [p for p in self._providers.values() if isinstance(p, HTTPProvider)]
        self._discovery = ModelDiscovery(http, self._models_refresh)
        await self._discovery.start()

    async def aclose(self) -> None:
        """Stop the model discovery, then close every provider's HTTP client."""
        if self._discovery is not None:
            await self._discovery.aclose()
        for provider in self._providers.values():
            await provider.aclose()

    async def __aenter__(self) -> ProviderRegistry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"ProviderRegistry(providers={list(self._providers)!r})"

    __str__ = __repr__


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _env_key(env: Mapping[str, str], var: str, where: str = "") -> str | None:
    """The key in environment variable ``var``, if set; ConfigError if it is not clean."""
    key = env.get(var) or None
    if key is not None:
        try:
            check_credential(var, key)
        except ValueError as exc:
            raise ConfigError(f"{where}{exc}") from None
    return key


def _from_env(env: Mapping[str, str]) -> list[Provider]:
    providers: list[Provider] = []
    base_url = env.get("TETHER_OPENAI_BASE_URL") or None
    key = _env_key(env, "TETHER_OPENAI_API_KEY")
    api = env.get("TETHER_OPENAI_API") or "chat"
    if api not in OPENAI_APIS:
        raise ConfigError(f"TETHER_OPENAI_API must be one of {', '.join(OPENAI_APIS)}")
    if base_url or key:
        providers.append(
            _build(
                "TETHER_OPENAI_*",
                OPENAI_APIS[api],
                name="openai",
                base_url=base_url or OPENAI_BASE_URL,
                api_key=key,
                models=_csv(env.get("TETHER_OPENAI_MODELS")),
            )
        )
    key = _env_key(env, "TETHER_ANTHROPIC_API_KEY")
    if key:
        providers.append(
            _build(
                "TETHER_ANTHROPIC_*",
                AnthropicProvider,
                name="anthropic",
                base_url=env.get("TETHER_ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL,
                api_key=key,
                models=_csv(env.get("TETHER_ANTHROPIC_MODELS")),
            )
        )
    elif env.get("TETHER_ANTHROPIC_BASE_URL") or env.get("TETHER_ANTHROPIC_MODELS"):
        raise ConfigError("TETHER_ANTHROPIC_* is set but TETHER_ANTHROPIC_API_KEY is not")
    return providers


def _build(where: str, cls: type[OpenAIProvider | AnthropicProvider], **kwargs: Any) -> Provider:
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        # Our own ValueErrors name the URL (credentials stripped), never the key.
        raise ConfigError(f"{where}: {exc}") from None


def config_tables(path: Path, key: str) -> list[dict[str, Any]]:
    """The array of tables ``[[key]]`` of the TOML file ``path`` (none if absent); ConfigError."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    tables = data.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: '{key}' must be an array of tables ([[{key}]])")
    return tables


class _FileUpstreams(NamedTuple):
    providers: list[Provider]
    #: Provider name -> the media types its models take, where the file sets them.
    media_types: dict[str, list[str]]
    #: Provider name -> its models' context budget, where the file sets one.
    budgets: dict[str, Budget]


def _from_file(path: Path, env: Mapping[str, str]) -> _FileUpstreams:
    """The file's upstreams, with what it says of their attachments and context budgets."""
    found = _FileUpstreams([], {}, {})
    seen: set[str] = set()
    for i, table in enumerate(config_tables(path, "upstreams")):
        where = f"{path}: upstreams[{i}]"
        provider = _upstream(where, table, env)
        if provider.name in seen or provider.name == "demo":
            raise ConfigError(f"{where}: the name {provider.name!r} is already taken")
        seen.add(provider.name)
        found.providers.append(provider)
        if "attachments" in table:
            found.media_types[provider.name] = _media_types(where, table["attachments"])
        if "context_tokens" in table:
            where = f"{where} ({provider.name})"
            found.budgets[provider.name] = _budget(where, table["context_tokens"])
    return found


def _budget(where: str, value: Any) -> Budget:
    """A checked ``context_tokens``: a positive integer, or a table of them per model."""

    def tokens(n: Any) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and n > 0

    if tokens(value):
        return int(value)
    if isinstance(value, dict) and value and all(tokens(n) for n in value.values()):
        return {str(model): int(n) for model, n in value.items()}
    raise ConfigError(
        f"{where}: 'context_tokens' must be a positive integer or a table of them per model"
    )


def _media_types(where: str, value: Any) -> list[str]:
    """An upstream's ``attachments``: a list of media types (``image/*`` allowed)."""
    if not isinstance(value, list) or not all(
        isinstance(v, str) and "/" in v and v == v.strip().lower() for v in value
    ):
        raise ConfigError(
            f"{where}: 'attachments' must be a list of lower-case media types "
            '(e.g. ["image/*", "application/pdf"])'
        )
    return list(value)


def _upstream(where: str, table: dict[str, Any], env: Mapping[str, str]) -> Provider:
    unknown = sorted(set(table) - _UPSTREAM_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    name = table.get("name")
    if not isinstance(name, str) or not name or "/" in name or name != name.strip():
        raise ConfigError(f"{where}: 'name' must be a non-empty string without '/'")
    where = f"{where} ({name})"
    kind = table.get("kind", name if name in KINDS else None)
    if kind not in KINDS:
        raise ConfigError(f"{where}: 'kind' must be one of {', '.join(KINDS)}")
    key = _upstream_key(where, kind, table, env)
    models = table.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ConfigError(f"{where}: 'models' must be a list of non-empty strings")
    kwargs: dict[str, Any] = {"name": name, "api_key": key or None, "models": models}
    kwargs.update(_upstream_options(where, kind, table))
    return _build(where, PROVIDER_KINDS[kind], **kwargs)


def _upstream_key(where: str, kind: str, table: dict[str, Any], env: Mapping[str, str]) -> Any:
    """The upstream's key, from ``api_key`` or the variable ``api_key_env`` names."""
    if "api_key" in table and "api_key_env" in table:
        raise ConfigError(f"{where}: give 'api_key' or 'api_key_env', not both")
    key = table.get("api_key")
    if "api_key_env" in table:
        var = table["api_key_env"]
        if not isinstance(var, str) or not var:
            raise ConfigError(f"{where}: 'api_key_env' must be a variable name")
        key = _env_key(env, var, f"{where}: ")
        if not key:
            raise ConfigError(f"{where}: environment variable {var} (api_key_env) is not set")
    if key is not None and not isinstance(key, str):
        raise ConfigError(f"{where}: 'api_key' must be a string")
    if kind == "anthropic" and not key:
        raise ConfigError(f"{where}: an anthropic upstream needs 'api_key' or 'api_key_env'")
    return key


def _upstream_options(where: str, kind: str, table: dict[str, Any]) -> dict[str, Any]:
    """The optional fields of an upstream, checked, as provider keyword arguments."""
    options: dict[str, Any] = {}
    if "base_url" in table:
        if not isinstance(table["base_url"], str):
            raise ConfigError(f"{where}: 'base_url' must be a string")
        options["base_url"] = table["base_url"]
    if "timeout" in table:
        timeout = table["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"{where}: 'timeout' must be a positive number of seconds")
        options["timeout"] = float(timeout)
    for field in ("headers", "extra_body"):
        if field in table:
            if not isinstance(table[field], dict):
                raise ConfigError(f"{where}: '{field}' must be a table")
            options[field] = table[field]
    if "headers" in options and not all(isinstance(v, str) for v in options["headers"].values()):
        raise ConfigError(f"{where}: 'headers' values must be strings")
    if "max_tokens" in table:
        if kind != "anthropic":
            raise ConfigError(f"{where}: 'max_tokens' applies to kind anthropic (use extra_body)")
        max_tokens = table["max_tokens"]
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"{where}: 'max_tokens' must be a positive integer")
        options["max_tokens"] = max_tokens
    return options

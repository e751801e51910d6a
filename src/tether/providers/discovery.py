"""Model discovery: the upstreams configured without a model list are asked for theirs.

Why: an upstream's models change (new releases, a local server pulling one),
and a web UI user can only pick what ``/v1/models`` lists. Each such upstream
is asked at start and then every ``interval`` seconds; a configured list is
never replaced (the provider does not discover). A failed round keeps the last
list, and is logged once per outage (with the redacted upstream message, never
the key or the URL), as is the recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from tether.providers._http import HTTPProvider
from tether.providers.base import ProviderError
from tether.runtime.tasks import cancel_and_wait

log = logging.getLogger("tether.providers")

#: Seconds one upstream's models request may take before the round counts as failed.
ASK_TIMEOUT = 30.0
#: Seconds the start waits for the first round (then it goes on in the background).
START_WAIT = 5.0
#: Model names a discovery's log line shows (OpenRouter lists hundreds).
_SHOWN = 20


class ModelDiscovery:
    """The background task that keeps the discovering providers' model lists."""

    def __init__(self, providers: Iterable[HTTPProvider], interval: float) -> None:
        """``interval``: seconds between rounds; 0 asks once, at start."""
        self._providers = [p for p in providers if p.discovers_models]
        self._interval = interval
        #: Names of the providers whose last round failed (logged once until they recover).
        self._failing: set[str] = set()
        self._first_round = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait: float = START_WAIT) -> None:
        """Start the rounds; return after the first, or after ``wait`` seconds."""
        if not self._providers or self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="model-discovery")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._first_round.wait()

    async def aclose(self) -> None:
        """Stop the rounds and wait for the task to end."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.gather(*(self._ask(p) for p in self._providers))
            self._first_round.set()
            if self._interval <= 0:
                return
            await asyncio.sleep(self._interval)

    async def _ask(self, provider: HTTPProvider) -> None:
        before = provider.models()
        try:
            async with asyncio.timeout(ASK_TIMEOUT):
                models = await provider.refresh_models()
        except Exception as err:  # whatever it is, the next round asks again
            if provider.name not in self._failing:
                self._failing.add(provider.name)
                why = _why(err)
                log.warning(
                    "%s: could not list the upstream's models (%s); keeping %d known model(s)",
                    provider.name,
                    why,
                    len(before),
                )
            return
        if provider.name in self._failing:
            self._failing.discard(provider.name)
            log.info("%s: the upstream's models are listed again", provider.name)
        if models != before:
            shown = ", ".join(models[:_SHOWN]) + (", ..." if len(models) > _SHOWN else "")
            log.info("%s: %d model(s) from the upstream: %s", provider.name, len(models), shown)


def _why(err: Exception) -> str:
    """What went wrong, credential-free: a ProviderError's own (redacted) message, else its kind.

    Other exceptions' texts are not ours to vet (an httpx error may quote a URL).
    """
    if isinstance(err, ProviderError):
        return str(err)
    if isinstance(err, TimeoutError):
        return f"no answer within {ASK_TIMEOUT:g} s"
    return type(err).__name__

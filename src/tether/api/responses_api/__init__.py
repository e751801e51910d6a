"""The OpenAI Responses API (``/v1/responses``) in front of tether's models.

Each response is a run in a session owned by the caller, so it is durable and
resumable: ``GET /v1/responses/{id}?stream=true&starting_after=N`` serves the
same typed events again, numbered the same, from any sequence number.
``previous_response_id`` continues the session of the response it names.
What is supported and what is not: docs/responses.md.

The package: :mod:`.request` parses and validates a request (pure),
:mod:`.events` translates a run's session events into the Responses API's
stream events and ``response`` object (pure, the relay's translator).
"""

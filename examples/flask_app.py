"""Send mail from a Flask app through one mailpool AccountPool.

Run it, once accounts are stored (e.g. with ``mailpool accounts add``)::

    pip install mailpool flask
    MAILPOOL_STORAGE=sqlite:///mailpool.db flask --app flask_app run

* One pool per process, made by the app factory and closed when the process
  exits; requests share it (``AccountPool`` is thread-safe), so SMTP sessions
  are reused between requests.
* The caller's mistakes are answered 422, never 500: ``ConfigurationError``
  (an invalid address, a line break in a header) and ``MessageRejected``
  (the mail server refused the recipients for good).
* ``NoAccountAvailable`` is 503. When waiting helps (every account is inside
  its minimum wait, busy, or at its daily limit) the answer says when to come
  back in ``Retry-After``; when it cannot (no account in scope, none active)
  there is no ``Retry-After``, and the log tells the operator what to fix.
* Any other send failure is 502: the mail servers failed, not this app.
"""

from __future__ import annotations

import atexit
import math
import os

from flask import Flask, Response, current_app, jsonify, request

from mailpool import (
    AccountPool,
    ConfigurationError,
    DeliveryUnknown,
    MessageRejected,
    NoAccountAvailable,
    SendError,
    open_storage,
)

WAIT = 5.0
"""Seconds a request may wait for an account to come out of its minimum wait."""


def create_app(storage_url: str | None = None) -> Flask:
    app = Flask(__name__)
    storage = open_storage(storage_url or os.environ["MAILPOOL_STORAGE"])
    pool = AccountPool(storage)
    app.extensions["mailpool"] = pool

    def close() -> None:
        pool.close()  # quits the SMTP sessions it kept open
        storage.close()

    atexit.register(close)

    @app.post("/invitations")
    def invite() -> dict[str, str]:
        data = request.get_json(force=True)
        pool: AccountPool = current_app.extensions["mailpool"]
        result = pool.send_mail(
            subject="You are invited",
            body=f"Hello {data.get('name', 'there')}, join us!",
            to=[str(data.get("to", ""))],
            wait=WAIT,
        )
        return {"message_id": result.message_id, "sent_by": result.account_email}

    @app.errorhandler(ConfigurationError)
    def invalid_input(exc: ConfigurationError) -> tuple[Response, int]:
        return jsonify(detail=str(exc)), 422

    @app.errorhandler(MessageRejected)
    def rejected(exc: MessageRejected) -> tuple[Response, int]:
        return jsonify(detail="the recipient was refused"), 422

    @app.errorhandler(NoAccountAvailable)
    def no_account(exc: NoAccountAvailable) -> tuple[Response, int, dict[str, str]]:
        if exc.retry_after is None:  # no account in scope, or none active
            app.logger.error("cannot send: %s", exc)  # an operator must act
            return jsonify(detail="sending is not available"), 503, {}
        app.logger.warning("no account free yet: %s", exc)
        retry_after = {"Retry-After": str(math.ceil(exc.retry_after))}
        return jsonify(detail="too many messages, try again later"), 503, retry_after

    @app.errorhandler(SendError)
    def send_failed(exc: SendError) -> tuple[Response, int]:
        app.logger.warning("send failed: %s", exc)
        if isinstance(exc, DeliveryUnknown):  # counted, never resent: do not retry
            detail = "the message may have been delivered; it was not sent again"
        else:
            detail = "the mail servers failed; try again later"
        return jsonify(detail=detail), 502

    return app

"""Send mail from a FastAPI app through one mailpool AccountPool.

Run it, once accounts are stored (e.g. with ``mailpool accounts add``)::

    pip install mailpool fastapi uvicorn
    MAILPOOL_STORAGE=sqlite:///mailpool.db uvicorn fastapi_app:app

* One pool per process: opened when the app starts and closed when it stops
  (the lifespan), so SMTP sessions are reused between requests and quit at
  the end.
* smtplib blocks, so each send runs in a worker thread, off the event loop.
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

import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mailpool import (
    AccountPool,
    ConfigurationError,
    DeliveryUnknown,
    MessageRejected,
    NoAccountAvailable,
    SendError,
    open_storage,
)

logger = logging.getLogger(__name__)

WAIT = 5.0
"""Seconds a request may wait for an account to come out of its minimum wait."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    storage = open_storage(os.environ["MAILPOOL_STORAGE"])
    try:
        with AccountPool(storage) as pool:  # closes its SMTP sessions at the end
            app.state.pool = pool
            yield
    finally:
        storage.close()


app = FastAPI(lifespan=lifespan)


class Invitation(BaseModel):
    to: str
    name: str = "there"


@app.post("/invitations")
async def invite(invitation: Invitation, request: Request) -> dict[str, str]:
    pool: AccountPool = request.app.state.pool
    result = await run_in_threadpool(
        pool.send_mail,
        subject="You are invited",
        body=f"Hello {invitation.name}, join us!",
        to=[invitation.to],
        wait=WAIT,
    )
    return {"message_id": result.message_id, "sent_by": result.account_email}


@app.exception_handler(ConfigurationError)
async def invalid_input(request: Request, exc: ConfigurationError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


@app.exception_handler(MessageRejected)
async def rejected(request: Request, exc: MessageRejected) -> JSONResponse:
    return JSONResponse({"detail": "the recipient was refused"}, status_code=422)


@app.exception_handler(NoAccountAvailable)
async def no_account(request: Request, exc: NoAccountAvailable) -> JSONResponse:
    if exc.retry_after is None:  # no account in scope, or none active
        logger.error("cannot send: %s", exc)  # an operator must act
        return JSONResponse({"detail": "sending is not available"}, status_code=503)
    logger.warning("no account free yet: %s", exc)
    return JSONResponse(
        {"detail": "too many messages right now, try again later"},
        status_code=503,
        headers={"Retry-After": str(math.ceil(exc.retry_after))},
    )


@app.exception_handler(SendError)
async def send_failed(request: Request, exc: SendError) -> JSONResponse:
    logger.warning("send failed: %s", exc)
    if isinstance(exc, DeliveryUnknown):  # counted, never resent: do not retry
        detail = "the message may have been delivered; it was not sent again"
    else:
        detail = "the mail servers failed; try again later"
    return JSONResponse({"detail": detail}, status_code=502)

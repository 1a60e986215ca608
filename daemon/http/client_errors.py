"""Malformed HTTP from a client is the client's problem, not a server error.

aiohttp logs every request it cannot parse (a NUL byte in a header, a broken
request line...) at ERROR with a traceback. Those are a hostile or broken
client's doing: this filter turns them into one DEBUG line without the
traceback, so the daemon's log keeps tracebacks for its own faults only.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

_SERVER_LOGGER = "aiohttp.server"


class ClientProtocolErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            reason = str(error.message).strip().splitlines()[0] if error.message else type(error).__name__
            record.msg, record.args = "malformed request from a client (answered %s): %s", (error.code, reason)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def quiet_client_protocol_errors() -> None:
    logger = logging.getLogger(_SERVER_LOGGER)
    if not any(isinstance(f, ClientProtocolErrors) for f in logger.filters):
        logger.addFilter(ClientProtocolErrors())

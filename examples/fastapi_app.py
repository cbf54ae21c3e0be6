"""A FastAPI app that shows its jobs live: statusbridge.web mounted under /status, plus a page.

Run ``python examples/fastapi_app.py [--port 8000]`` and open http://127.0.0.1:8000/;
in another terminal, ``statusbridge simulate --jobs 20`` writes jobs the page shows as
they change. The page (live_jobs.html) is plain JavaScript: an ``EventSource`` on
/status/api/events, a table redrawn from each event.
"""

import argparse
import os
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import FileResponse

from statusbridge.web import create_app

STATUS_DIR = os.environ.get("STATUSBRIDGE_DIR", "batch_status")
PAGE = Path(__file__).with_name("live_jobs.html")

app = FastAPI()
# No token: the status routes read openly and refuse cancels. On a shared host, pass
# token=... (then clients send "Authorization: Bearer ...") and bind to 127.0.0.1 anyway.
app.mount("/status", create_app(STATUS_DIR))


@app.get("/")
def page() -> FileResponse:
    return FileResponse(PAGE)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    port = parser.parse_args().port
    # Open pages hold event streams: without a timeout, Ctrl-C would wait for them to leave.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)

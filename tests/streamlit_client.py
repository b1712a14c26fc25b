"""A protocol-level Streamlit client for load tests: what a browser tab sends and fetches, without rendering.

Twenty Chromium instances on a 2-core machine measure mostly themselves (React layout, Plotly, image
decoding); this client speaks Streamlit's own wire protocol instead (websocket `/_stcore/stream`,
protobuf `BackMsg`/`ForwardMsg`, the XSRF cookie, the two-step file upload) and fetches every image the
page references, as a browser would, so the server does the same work per session while the client's
own cost stays a few milliseconds.
"""

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Common_pb2 import FileUploaderState, FileURLsRequest, UploadedFileInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates

XSRF_COOKIE = "_streamlit_xsrf"


@dataclass
class RunLog:
    """What one script run sent to the page, with arrival times (seconds since the run was requested)."""
    started: float
    alerts: list = field(default_factory=list)  # (seconds, body)
    captions: list = field(default_factory=list)  # (seconds until the image was fetched, its caption)
    exceptions: list = field(default_factory=list)
    finished: float = None
    fetches: list = field(default_factory=list)

    def alert(self, *needles) -> tuple:
        """(seconds, body) of the first alert containing any of these texts, else (None, "")."""
        return next(((t, body) for t, body in self.alerts if any(n in body for n in needles)), (None, ""))

    def caption_time(self, prefix: str):
        return next((t for t, text in self.captions if text.startswith(prefix)), None)


class StreamlitSession:
    """One browser tab's conversation with `streamlit run` at `url` (use `async with`)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self.session_id = self.page_script_hash = None
        self.widgets = {}  # element type -> widget id, from the last run (first of each type)

    async def __aenter__(self):
        for path in ("/", "/_stcore/health"):  # the page, then the health check that sets the XSRF cookie
            (await asyncio.to_thread(self.http.get, self.url + path, timeout=60)).raise_for_status()
        xsrf = self.http.cookies.get(XSRF_COOKIE)
        ws_url = "ws://" + urlsplit(self.url).netloc + "/_stcore/stream"
        self.ws = await websockets.connect(ws_url, subprotocols=["streamlit", xsrf] if xsrf else ["streamlit"],
                                           additional_headers={"Cookie": f"{XSRF_COOKIE}={xsrf}"} if xsrf else None,
                                           max_size=None, open_timeout=60)
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()
        self.http.close()

    async def send(self, **fields) -> None:
        """One BackMsg with these fields."""
        await self.ws.send(BackMsg(**fields).SerializeToString())

    async def run(self, widgets=(), timeout: float = 600) -> RunLog:
        """Ask for a script run with these widget states and read its output until the run finishes."""
        log = RunLog(time.perf_counter())
        await self.send(rerun_script=ClientState(page_script_hash=self.page_script_hash or "",
                                                 widget_states=WidgetStates(widgets=list(widgets))))
        self.widgets = {}
        async with asyncio.timeout(timeout):
            while log.finished is None:
                self._read(ForwardMsg.FromString(await self.ws.recv()), log)
            await asyncio.gather(*log.fetches)
        return log

    def _read(self, fwd: ForwardMsg, log: RunLog) -> None:
        now = time.perf_counter() - log.started
        kind = fwd.WhichOneof("type")
        if kind == "new_session":
            self.session_id = fwd.new_session.initialize.session_id
            self.page_script_hash = fwd.new_session.page_script_hash
        elif kind == "script_finished":
            log.finished = now
        elif kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
            element = fwd.delta.new_element
            which = element.WhichOneof("type")
            if which == "alert":
                log.alerts.append((now, element.alert.body))
            elif which == "exception":
                log.exceptions.append(element.exception.message)
            elif which == "imgs":  # a browser fetches each image as its element arrives
                log.fetches += [asyncio.create_task(self._fetch(img.url, img.caption, log)) for img in element.imgs.imgs]
            elif which in ("file_uploader", "radio", "selectbox", "toggle", "slider", "checkbox"):
                self.widgets.setdefault(which, getattr(element, which).id)

    async def _fetch(self, path: str, caption: str, log: RunLog) -> None:
        if path.startswith("/"):  # media served by the app (data: URLs need no request)
            response = await asyncio.to_thread(self.http.get, self.url + path, timeout=60)
            response.raise_for_status()
        log.captions.append((time.perf_counter() - log.started, caption))

    async def upload(self, name: str, data: bytes, mime: str = "image/jpeg") -> UploadedFileInfo:
        """Streamlit's two-step upload: ask the session for an upload URL, then PUT the file there."""
        request_id = uuid.uuid4().hex
        await self.send(file_urls_request=FileURLsRequest(request_id=request_id, file_names=[name],
                                                          session_id=self.session_id))
        while True:
            fwd = ForwardMsg.FromString(await self.ws.recv())
            if fwd.WhichOneof("type") == "file_urls_response" and fwd.file_urls_response.response_id == request_id:
                break
        urls = fwd.file_urls_response.file_urls[0]
        response = await asyncio.to_thread(
            self.http.put, self.url + urls.upload_url, files={"file": (name, data, mime)},
            headers={"X-Xsrftoken": self.http.cookies.get(XSRF_COOKIE, "")}, timeout=60)
        response.raise_for_status()
        return UploadedFileInfo(name=name, size=len(data), file_id=urls.file_id, file_urls=urls)

    def uploader_state(self, files) -> WidgetState:
        """The file uploader's widget state naming these uploaded files (the uploader of the last run)."""
        return WidgetState(id=self.widgets["file_uploader"],
                           file_uploader_state_value=FileUploaderState(uploaded_file_info=files))

"""The web page of `pbn serve`: a FastAPI app over ``Service``, and the server that runs it.

FastAPI (with uvicorn) rather than Gradio: three small views need no widget
framework, the page and its HTTP API stay plain (the tests drive both), it
starts in a second and asks nothing of the internet (Gradio loads web fonts
and reports usage unless told not to). docs/serve.md says more.

Every answer is JSON (or a picture); a bad request is answered with
``{"error": "<one line>"}`` and status 400, and the server keeps serving.
"""

from __future__ import annotations

import base64
import socket
from importlib import resources

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from pbn_cli.core.errors import PbnError
from pbn_cli.web.service import MAX_UPLOAD_BYTES, SearchResult, Service, Upload, png


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _image(upload: Upload) -> dict:
    return {"name": upload.name, "view": _data_url(png(upload.pixels))}


def _neighbours(result: SearchResult) -> dict:
    near = result.neighbours
    return {
        "neighbours": [
            {"image_id": str(r.image_id), "artist": r.artist, "split": r.split, "distance": float(r.distance),
             "same_artist_probability": float(r.same_artist_probability), "same_painting": bool(r.same_painting),
             "thumbnail": f"api/paintings/{int(r.cache_row)}.png"}
            for r in near.itertuples()
        ],
        "vote": [[artist, int(n)] for artist, n in result.vote],
    }


async def _read(file: UploadFile) -> tuple[bytes, str]:
    """At most MAX_UPLOAD_BYTES + 1 bytes of an upload (more is refused by the service)."""
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    return data, file.filename or "upload"


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="pbn", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(PbnError)
    async def _one_line(request: Request, err: PbnError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"error": f"the server could not answer: {type(err).__name__}: {err}"}, status_code=500)

    @app.middleware("http")
    async def _limit(request: Request, call_next):
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > 2 * MAX_UPLOAD_BYTES + 2**20:  # two images and the form around them
            return JSONResponse({"error": f"upload too large: at most {MAX_UPLOAD_BYTES // 2**20} MB an image"},
                                status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return resources.files("pbn_cli.web").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/api/model")
    def model() -> dict:
        return service.describe()

    @app.post("/api/compare")
    async def compare(a: UploadFile = File(...), b: UploadFile = File(...), k: int = Form(5)) -> dict:
        files = [await _read(a), await _read(b)]
        return await _threaded(lambda: _compare(service, files, k))

    @app.post("/api/search")
    async def search(image: UploadFile = File(...), k: int = Form(10), split: str = Form("all")) -> dict:
        data = await _read(image)
        return await _threaded(lambda: _search(service, data, k, split))

    @app.post("/api/evidence")
    async def compare_evidence(a: UploadFile = File(...), b: UploadFile = File(...)) -> dict:
        files = [await _read(a), await _read(b)]
        return await _threaded(lambda: _evidence(service, files))

    @app.post("/api/attribute")
    async def attribute(image: UploadFile = File(...), among: str = Form("all"), k: int = Form(5),
                        evidence: bool = Form(True)) -> dict:
        data = await _read(image)
        return await _threaded(lambda: _attribute(service, data, among, k, evidence))

    @app.get("/api/paintings/{cache_row}.png")
    def painting(cache_row: int) -> Response:
        return Response(service.thumbnail(cache_row), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/histogram.png")
    def histogram() -> Response:
        drawn = service.histogram()
        if drawn is None:
            raise PbnError("no val pairs to draw (an exported model, or a val split of one artist)")
        return Response(drawn[0], media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/runs")
    def runs() -> dict:
        return {"runs": service.runs(), "serving": service.model.name}

    @app.get("/api/runs/{run}/reports/{report}", response_class=HTMLResponse)
    def report(run: str, report: str) -> str:
        return service.report_html(run, report)

    @app.get("/api/runs/{run}/reports/{report}/{name}")
    def picture(run: str, report: str, name: str) -> FileResponse:
        return FileResponse(service.picture(run, report, name), media_type="image/png")

    return app


async def _threaded(fn):
    """Model work off the event loop, so other tabs are answered meanwhile."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)


def _compare(service: Service, files: list[tuple[bytes, str]], k: int) -> dict:
    a, b = (service.upload(data, name) for data, name in files)
    verdict = service.compare(a, b)
    answer = {**verdict.to_dict(), "images": [_image(a), _image(b)]}
    if service.ws is not None:
        answer["neighbours"] = [_neighbours(service.search(x, k=k))["neighbours"] for x in (a, b)]
        drawn = service.histogram()
        answer["histogram"] = {"picture": f"api/histogram.png?weights={service.model.fingerprint()}", **drawn[1]} if drawn else None
    return answer


def _search(service: Service, file: tuple[bytes, str], k: int, split: str) -> dict:
    query = service.upload(*file)
    result = service.search(query, k=k, split=split)
    return {"run": service.model.name, "query": _image(query), **_neighbours(result)}


def _evidence(service: Service, files: list[tuple[bytes, str]]) -> dict:
    a, b = (service.upload(data, name) for data, name in files)  # each read and checked once, as compare does
    v = service.compare(a, b)
    word = "same artist" if v.same_artist else "different artists"
    found = service.evidence(files[0], files[1], f"{a.name} and {b.name}: {word}, p(same) = "
                                                 f"{v.same_artist_probability:.2f}")
    return _evidence_answer(found)


def _evidence_answer(found: dict) -> dict:
    """The evidence for the page: its picture, its data, and each matched pair with its two details."""
    details = [{**pair, "a_detail": _data_url(a), "b_detail": _data_url(b)}
               for pair, (a, b) in zip(found["data"]["pairs"], found["details"])]
    return {"evidence": _data_url(found["picture"]), "evidence_data": found["data"], "details": details}


def _attribute(service: Service, file: tuple[bytes, str], among: str, k: int, with_evidence: bool) -> dict:
    query = service.upload(*file)
    result = service.attribute(query, among, k)
    answer = {"run": service.model.name, "query": _image(query), **result.to_dict()}
    for hand, shown in zip(result.hands, answer["hands"]):
        shown["closest"] = [{**c, "thumbnail": f"api/paintings/{int(row)}.png"}
                            for c, row in zip(shown["closest"], hand.closest["cache_row"])]
    if with_evidence and result.hands and len(result.hands[0].closest):
        top = result.hands[0]
        other = service.painting_file(str(top.closest["image_id"].iloc[0]))
        verdict = "unknown hand (the closest hand shown)" if result.unknown else f"{result.answer}, p = {top.probability:.2f}"
        answer.update(_evidence_answer(service.evidence(file, other, f"{query.name}: {verdict}")))
    return answer


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); one line of PbnError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise PbnError(f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def server(service: Service):
    """A uvicorn server of the page (``.run(sockets=[sock])`` serves; ``.should_exit = True`` stops it)."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", access_log=False))


def serve(service: Service, sock: socket.socket) -> None:
    """Serve until Ctrl-C (uvicorn stops cleanly on SIGINT and SIGTERM)."""
    server(service).run(sockets=[sock])

"""
The ASGI application behind `allennlp serve` (FastAPI): `POST /predict`, `POST /predict_batch`,
`GET /health` and the web page at `GET /`.

Every request is checked here, in the event loop, before it reaches the model: the body, image and
pixel limits, tokens per input, inputs per batch, types (the predictor's own `parse_json`), and
image names (only inside `--image-dir`). A refused request gets a 4xx JSON `{"error", "field"}`;
nothing a request sends is ever written to disk (uploads are parsed in memory), and no traceback
reaches a client (the log has it). Checked inputs go to the `MicroBatcher`, which runs the model
on one thread in batches gathered from concurrent requests; the `BatchSplitter`, fitted on the model
when the app is made, cuts each such batch into model calls of similar lengths when that costs less.
"""
import json
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from python_multipart.multipart import FormParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException

from fmit_plugin.commands.batch_splitter import BatchSplitter
from fmit_plugin.commands.micro_batcher import MicroBatcher
from fmit_plugin.commands.predict import InputItem, _describe, _predict_batch, to_json_line
from fmit_plugin.commands.serve_page import page_html
from fmit_plugin.common.plugins import import_plugins
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.twitter_mner import IMAGE_EXTENSIONS
from fmit_plugin.predictors.predictor import Predictor, SentenceTaggerPredictor, TweetInput
from fmit_plugin.version import VERSION
from fmit_plugin.vision.image_loading import image_header_pixels

logger = logging.getLogger(__name__)

MODEL_FAILED = "the model failed on this input (the server log has the details)"


@dataclass
class ServeSettings:
    """
    What `allennlp serve` was told; every limit is a 4xx JSON error naming the field.

    # Parameters

    batch_size : `int`, optional (default = `32`)
        Inputs per model call; concurrent requests are batched together up to this.
    batch_wait_ms : `float`, optional (default = `5`)
        How long a batch waits for more requests once the model is free.
    image_dir : `str`, optional (default = `None`)
        Image names in requests are read from this folder only (no `..`, no absolute path, no
        symlink leaving it); without it, a request naming an image is refused.
    max_image_bytes : `int`, optional (default = 10 MiB)
        Largest image a request may carry (uploaded or base64), in bytes.
    max_image_pixels : `int`, optional (default = 40 megapixels)
        Read from the image's header: a decompression bomb is refused before anything is decoded.
    max_body_bytes : `int`, optional (default = 16 MiB)
        Largest request body, refused before it is read whole.
    max_tokens : `int`, optional (default = `512`)
        Tokens per input (a tweet has at most a few dozen).
    max_batch_inputs : `int`, optional (default = `256`)
        Inputs per `/predict_batch` request.
    """

    batch_size: int = 32
    batch_wait_ms: float = 5.0
    image_dir: Optional[str] = None
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_body_bytes: int = 16 * 1024 * 1024
    max_tokens: int = 512
    max_batch_inputs: int = 256


class ApiError(Exception):
    """A refused request: its HTTP status, what is wrong, and the field (JSON path) it is about."""

    def __init__(self, status: int, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def json_response(content: Any, status: int = 200) -> Response:
    """Strict JSON with `predict`'s rules (`to_json_line`): readable UTF-8, escapes where needed."""
    return Response(to_json_line(content), status_code=status, media_type="application/json")


def _error(status: int, message: str, field: Optional[str] = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return json_response(body, status)


class InputChecker:
    """Turns one request input (a JSON object, or the fields of a multipart upload) into a checked
    `TweetInput`, or raises `ApiError` naming the field (prefixed `inputs[i].` in a batch)."""

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        if not isinstance(predictor, SentenceTaggerPredictor):
            raise TypeError(f"allennlp serve needs a SentenceTaggerPredictor, got {type(predictor).__name__}")
        self.predictor = predictor
        self.settings = settings
        self.image_dir = Path(os.path.realpath(settings.image_dir)) if settings.image_dir else None

    def check(self, value: Any, prefix: str = "", image_bytes: Optional[bytes] = None) -> TweetInput:
        if not isinstance(value, dict):
            raise ApiError(422, f"expected a JSON object, got {_json_type(value)}", prefix.rstrip(".") or None)
        encoded = value.get("image_base64")
        if isinstance(encoded, str) and len(encoded) > (self.settings.max_image_bytes + 2) * 4 // 3 + 4:
            raise ApiError(413, f"the image is over the server's limit of {self.settings.max_image_bytes} bytes",
                           prefix + "image_base64")
        try:
            tweet = self.predictor.parse_json(value)
        except ValueError as error:
            raise ApiError(422, str(error), prefix + _field_of(str(error))) from error
        field = prefix + ("tokens" if "tokens" in value else "sentence")
        if not tweet.tokens:
            raise ApiError(422, "the tweet is empty: there is nothing to tag", field)
        if len(tweet.tokens) > self.settings.max_tokens:
            raise ApiError(413, f"{len(tweet.tokens)} tokens; the server takes at most {self.settings.max_tokens} "
                                "per input", field)
        if image_bytes is not None:
            tweet.image_bytes = image_bytes
        elif tweet.image is not None and tweet.image_bytes is None:
            tweet.image_bytes = self._read_named_image(tweet.image, prefix + "image")
        if tweet.image_bytes is not None:
            self._check_image_bytes(tweet.image_bytes, prefix + ("image_base64" if encoded else "image"))
        return tweet

    def _check_image_bytes(self, data: bytes, field: str) -> None:
        limit = self.settings.max_image_bytes
        if len(data) > limit:
            raise ApiError(413, f"the image has {len(data)} bytes; the server's limit is {limit}", field)
        header = image_header_pixels(data)
        # An image Pillow cannot identify goes on: the model gets the uniform empty image, with a warning.
        if header is not None and header[1] > self.settings.max_image_pixels:
            raise ApiError(413, f"the image is {header[0]} ({header[1]} pixels); the server's limit is "
                                f"{self.settings.max_image_pixels} pixels (decompression bomb?)", field)

    def _read_named_image(self, name: str, field: str) -> bytes:
        """The bytes of `name` inside `--image-dir`: never a file outside it, whatever `name` says."""
        if self.image_dir is None:
            raise ApiError(403, "this server reads no image files (started without --image-dir): send the image "
                                "itself, as \"image_base64\" or a multipart upload", field)
        parts = Path(name).parts
        if not name or "\x00" in name or "\\" in name or Path(name).is_absolute() or ".." in parts:
            raise ApiError(403, f"{name!r} is not a plain name inside the server's image folder", field)
        candidates = [name] if Path(name).suffix else []
        candidates += [name + extension for extension in IMAGE_EXTENSIONS]
        for candidate in candidates:
            path = os.path.realpath(self.image_dir / candidate)
            if os.path.commonpath([path, str(self.image_dir)]) != str(self.image_dir):
                raise ApiError(403, f"{name!r} leads outside the server's image folder", field)
            try:
                info = os.stat(path)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            if info.st_size > self.settings.max_image_bytes:
                raise ApiError(413, f"{name!r} has {info.st_size} bytes; the server's limit is "
                                    f"{self.settings.max_image_bytes}", field)
            with open(path, "rb") as handle:
                return handle.read(self.settings.max_image_bytes + 1)
        raise ApiError(404, f"no image {name!r} in the server's image folder", field)


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _field_of(message: str) -> str:
    """The key a predictor error names: `"tokens" must be...` -> tokens; `"regions"[2]: ...` -> regions[2]."""
    if message.startswith('"'):
        end = message.find('"', 1)
        rest = message[end + 1 :]
        index = rest[: rest.find("]") + 1] if rest.startswith("[") else ""
        return message[1:end] + index
    return "tokens"


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body has {declared} bytes; the server's limit is {limit}", "body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the request body is over the server's limit of {limit} bytes", "body")
    return bytes(body)


def _parse_json(body: bytes) -> Any:
    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(body.decode("utf-8"), parse_constant=refuse_constant)
    except UnicodeDecodeError as error:
        raise ApiError(400, f"the body is not UTF-8 (byte {error.start})", "body") from error
    except (ValueError, RecursionError) as error:
        raise ApiError(400, f"the body is not valid JSON: {error}", "body") from error


def _parse_multipart(content_type: str, body: bytes, max_bytes: int) -> tuple[dict[str, str], Optional[bytes],
                                                                             Optional[str]]:
    """Fields and the uploaded image of a multipart form, parsed in memory (python-multipart would spill
    a file over 1 MiB to a temporary file: the limit is raised above the body limit so it never does)."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "multipart body without a boundary", "body")
    fields: dict[str, str] = {}
    files: list[Any] = []

    def on_field(item: Any) -> None:
        name = (item.field_name or b"").decode("utf-8", "replace")
        fields[name] = (item.value or b"").decode("utf-8", "replace")

    parser = FormParser("multipart/form-data", on_field, files.append, boundary=boundary,
                        config={"MAX_MEMORY_FILE_SIZE": max_bytes + 1, "MAX_BODY_SIZE": max_bytes})
    try:
        parser.write(body)
        parser.finalize()
    except Exception as error:  # noqa: BLE001 - python-multipart raises several kinds for broken forms
        raise ApiError(400, f"the multipart body cannot be parsed: {type(error).__name__}", "body") from error
    image: Optional[bytes] = None
    name: Optional[str] = None
    for upload in files:
        if upload.field_name != b"image":
            raise ApiError(422, f"unexpected file field {upload.field_name!r}; upload the image as \"image\"",
                           (upload.field_name or b"").decode("utf-8", "replace"))
        assert upload.in_memory
        upload.file_object.seek(0)
        image = upload.file_object.read()
        name = (upload.file_name or b"").decode("utf-8", "replace") or None
    return fields, image, name


def _form_to_input(fields: dict[str, str], upload_name: Optional[str]) -> dict[str, Any]:
    """A multipart form as the JSON input it stands for: `tokens` and `regions` are JSON text in the form."""
    value: dict[str, Any] = {}
    for key in ("tokens", "regions"):
        if key in fields:
            try:
                value[key] = json.loads(fields[key])
            except ValueError as error:
                raise ApiError(422, f"the form field is not JSON: {error}", key) from error
    for key in ("sentence", "id", "image_base64"):
        if key in fields:
            value[key] = fields[key]
    if "image" in fields:
        value["image"] = fields["image"]
    elif upload_name:
        # The upload's file name is its image id (what a sidecar is looked up with), never a path read.
        value["image"] = os.path.basename(upload_name)
    unknown = set(fields) - {"tokens", "regions", "sentence", "id", "image_base64", "image"}
    if unknown:
        raise ApiError(422, f"unknown form fields: {', '.join(sorted(unknown))}", sorted(unknown)[0])
    return value


def fit_batch_splitter(predictor: SentenceTaggerPredictor, settings: ServeSettings,
                       repeats: int = 3) -> BatchSplitter:
    """The `BatchSplitter` of this model on this machine, from timed calls on made-up tweets of two
    sizes and two lengths (each the fastest of `repeats`, after one warm-up call, which also spares
    the first request the model's first-call cost). If the model cannot be timed, batches stay whole."""
    whole = BatchSplitter(per_call=1.0, per_position=0.0, max_batch_size=settings.batch_size)
    if settings.batch_size == 1:
        return whole
    many = min(8, settings.batch_size)
    shapes = [(1, 4), (1, 32), (many, 4), (many, 32)]
    timings = []
    try:
        predictor.predict_instances([predictor.tweet_to_instance(TweetInput(tokens=["word"] * 4))])
        for count, words in shapes:
            words = min(words, settings.max_tokens)
            instances = [predictor.tweet_to_instance(TweetInput(tokens=["word"] * words)) for _ in range(count)]
            longest = max(predictor.model.sorting_lengths(instances))
            fastest = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                predictor.predict_instances(instances)
                fastest = min(fastest, time.perf_counter() - started)
            timings.append((count, longest, fastest))
        return BatchSplitter.fit(timings, settings.batch_size)
    except Exception as error:  # noqa: BLE001 - serving goes on with whole batches
        logger.warning("Could not time the model to fit the batch cost model (%s); batches stay whole",
                       _describe(error))
        return whole


def _health(predictor: Predictor, settings: ServeSettings, batcher: MicroBatcher,
            splitter: BatchSplitter) -> dict[str, Any]:
    tags = list(predictor.model.vocab.get_index_to_token_vocabulary("labels").values())
    extractor = getattr(predictor.dataset_reader, "visual_objects", None)
    return {
        "status": "ok",
        "model": type(predictor.model).__name__,
        "labels": sorted({tag[2:] for tag in tags if tag[:2] in ("B-", "I-")}),
        "tags": tags,
        "device": str(predictor.model.device()),
        "version": VERSION,
        "visual_objects": extractor is not None,
        "grounder": type(extractor.grounder).__name__ if extractor is not None else None,
        "batch_size": settings.batch_size,
        "image_dir": settings.image_dir is not None,
        "batches_run": batcher.batches_run,
        "inputs_run": batcher.items_run,
        "batch_costs": splitter.describe(),
    }


def create_app(predictor: Predictor, settings: Optional[ServeSettings] = None) -> FastAPI:
    """The application serving `predictor` under `settings`."""
    settings = settings or ServeSettings()
    checker = InputChecker(predictor, settings)
    splitter = fit_batch_splitter(checker.predictor, settings)
    logger.info("Batch cost model: %s", splitter.describe())

    def run_batch(tweets: list[TweetInput]) -> Iterator[tuple[list[int], list[dict[str, Any]]]]:
        # On the model thread: images are read and visual objects extracted here, as the model runs.
        items = []
        for tweet in tweets:
            try:
                items.append(InputItem(None, None, checker.predictor.tweet_to_instance(tweet)))
            except Exception as error:  # noqa: BLE001 - this input only
                items.append(InputItem(None, None, RuntimeError(_describe(error))))
        good = [k for k, item in enumerate(items) if isinstance(item.payload, TaggingInstance)]
        failed = [k for k, item in enumerate(items) if not isinstance(item.payload, TaggingInstance)]
        lengths = predictor.model.sorting_lengths([items[k].payload for k in good]) if good else []
        # The failed inputs first (they never reach the model), then model calls of similar lengths,
        # each answered as soon as it is done.
        for group in [failed] + [[good[i] for i in group] for group in splitter.split(lengths)]:
            if not group:
                continue
            results = _predict_batch(predictor, [items[k] for k in group], settings.batch_size)
            for result in results:
                if "error" in result:
                    logger.warning("an input failed: %s", result["error"])
                    result["error"] = MODEL_FAILED
            yield group, results

    batcher: MicroBatcher[TweetInput, dict[str, Any]] = MicroBatcher(
        run_batch, settings.batch_size, settings.batch_wait_ms / 1000
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(title="fmit-plugin", version=VERSION, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.batcher = batcher
    app.state.settings = settings
    html = page_html(list(_health(predictor, settings, batcher, splitter)["labels"]))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return _error(error.status, error.message, error.field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> Response:
        logger.exception("%s %s failed", request.method, request.url.path)
        return _error(500, "internal error (the server log has the details)")

    @app.get("/health")
    async def health() -> Response:
        return json_response(_health(predictor, settings, batcher, splitter))

    @app.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(html)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        body = await _read_body(request, settings.max_body_bytes)
        if content_type.startswith("multipart/form-data"):
            fields, image, name = _parse_multipart(content_type, body, settings.max_body_bytes)
            tweet = checker.check(_form_to_input(fields, name), image_bytes=image)
        else:
            tweet = checker.check(_parse_json(body))
        answer = (await batcher.submit([tweet]))[0]
        if "error" in answer:
            return _error(500, answer["error"])
        return json_response(answer)

    @app.post("/predict_batch")
    async def predict_batch(request: Request) -> Response:
        value = _parse_json(await _read_body(request, settings.max_body_bytes))
        inputs = value.get("inputs") if isinstance(value, dict) else value
        if not isinstance(inputs, list):
            raise ApiError(422, 'expected a JSON array of inputs (or {"inputs": [...]})', "inputs")
        if len(inputs) > settings.max_batch_inputs:
            raise ApiError(413, f"{len(inputs)} inputs; the server takes at most {settings.max_batch_inputs} "
                                "per request", "inputs")
        tweets = [checker.check(item, f"inputs[{index}].") for index, item in enumerate(inputs)]
        # A failed input keeps its place (its "error" says so); the others are answered.
        return json_response(await batcher.submit(tweets))

    return app


def app_from_environment() -> FastAPI:
    """For `uvicorn --factory` with several workers: each worker process loads its own model from
    what `allennlp serve` put in `FMIT_SERVE` (archive, predictor, device, settings)."""
    config = json.loads(os.environ["FMIT_SERVE"])
    # Importing this module imported the package, which registered the plugin's own classes.
    import_plugins(config["include_package"])
    predictor = Predictor.from_path(config["archive"], config["predictor"], config["cuda_device"],
                                    config["overrides"])
    return create_app(predictor, ServeSettings(**config["settings"]))

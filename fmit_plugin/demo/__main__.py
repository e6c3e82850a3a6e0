import logging

from fmit_plugin.demo import main

logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
for _noisy in ("transformers", "huggingface_hub"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)
main()

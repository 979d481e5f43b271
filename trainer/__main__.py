"""``python -m ringfold.trainer ARGS`` = ``ringfold train ARGS``: the entry point torchrun launches.

torchrun --nproc_per_node=2 -m ringfold.trainer --model ViT-B-16 --pretrained openai --data DIR --out RUN
"""

import sys

from ringfold.cli import main

sys.exit(main(["train", *sys.argv[1:]]))

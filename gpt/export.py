"""Write a training run as a Hugging Face GPT-2 folder that `transformers` opens.

    python -m gpt.export RUN_DIR OUT_DIR

OUT_DIR gets config.json and model.safetensors (float32), which
`transformers.GPT2LMHeadModel.from_pretrained(OUT_DIR)` loads; and, when the run was
fine-tuned from a model folder, that folder's vocab.json and merges.txt. A run trained with
the bytes or cl100k tokenizer has no GPT-2 tokenizer files to give: its ids are written
as they are. Models GPT-2 cannot express (grouped-query attention) are refused.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from gpt.checkpoint import load_checkpoint
from gpt.cli import HelpFormatter, fail
from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from gpt.hf import save_pretrained
from gpt.model import GPT
from gpt.rundir import newest_run
from gpt.tokenizer import TokenizerUnavailable, get_tokenizer

TOKENIZER_FILES = ("vocab.json", "merges.txt")


def export_run(run_dir: Path, out_dir: Path) -> list[str]:
    """Export the checkpoint in run_dir to out_dir; returns the names of the files written."""
    payload = load_checkpoint(newest_run(Path(run_dir)), map_location="cpu")
    model = GPT(GPTConfig(**payload["model_config"]))
    model.load_state_dict(payload["model"])
    try:
        eos_token = get_tokenizer(payload["tokenizer"]).eos_token
    except TokenizerUnavailable:  # its vocabulary files are not here; config.json then names the last id
        eos_token = None
    save_pretrained(model, out_dir, eos_token=eos_token)
    written = ["config.json", "model.safetensors"]
    if Path(payload["tokenizer"]).is_absolute():  # a model folder's BPE: its files travel with the weights
        for name in TOKENIZER_FILES:
            shutil.copyfile(Path(payload["tokenizer"]) / name, out_dir / name)
        written += TOKENIZER_FILES
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpt.export",
        description="Write a gptmeter run's checkpoint as a Hugging Face GPT-2 folder (safetensors).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, help="run directory holding ckpt.pt or ckpt.dcp/, or a folder of "
                        "numbered runs (its newest is exported)")
    parser.add_argument("out_dir", type=Path, help="folder to create; must not already hold a model")
    args = parser.parse_args(argv)
    try:
        written = export_run(args.run_dir, args.out_dir)
    except GptmeterError as error:
        fail("gpt.export", str(error))
    print(f"wrote {', '.join(written)} to {args.out_dir}; open with "
          f"transformers.GPT2LMHeadModel.from_pretrained({str(args.out_dir)!r})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

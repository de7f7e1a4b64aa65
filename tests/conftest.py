"""Shared fixtures: a CLI runner with stdout and stderr apart, tiny random models built in-test (never the network),
and the path of the shared datasets (tests that need them skip when they are absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"
SHARED_DATA = Path(os.environ.get("NLPTOOL_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner):
    """Run ``nlptool ARGS`` in-process; returns click's Result (``stdout``, ``stderr``, ``exit_code``)."""
    from nlptool.cli import app

    def _invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return _invoke


def jsonl(text: str) -> list[dict]:
    """Parse every non-empty stdout line as JSON (fails loudly on anything else)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(80)] + list("abcdefghijklmn")


def tiny_bert_config(vocab_size: int = len(TINY_VOCAB)):
    """The tiny BERT configuration every in-test model uses (2 layers, hidden size 32)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT with MLM+NSP heads (BertForPreTraining) and a WordPiece tokenizer."""
    import torch
    from transformers import BertForPreTraining, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    (path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    tok = BertTokenizerFast.from_pretrained(path)  # reads vocab.txt (transformers 5 ignores vocab_file=)
    assert tok.convert_ids_to_tokens(tok("w1 a")["input_ids"]) == ["[CLS]", "w1", "a", "[SEP]"]
    tok.save_pretrained(path)
    # seeded: the weights must not depend on which test asked for the fixture first (the global RNG state then)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertForPreTraining(tiny_bert_config())
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_no_heads_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    """The same encoder saved as a bare BertModel: no MLM or NSP head (like all-MiniLM-L6-v2)."""
    from transformers import BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert-bare")
    BertModel.from_pretrained(tiny_bert_dir, add_pooling_layer=False).save_pretrained(path)
    BertTokenizerFast.from_pretrained(tiny_bert_dir).save_pretrained(path)
    return path


def run_nlptool(args, *, nproc: int = 1, cwd=None, timeout: int = 300):
    """``python -m nlptool ARGS`` in a subprocess (one thread, offline), or under ``torchrun --standalone
    --nproc_per_node NPROC`` when ``nproc`` > 1; the CompletedProcess (text stdout/stderr)."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    cmd = [sys.executable, *launcher, "-m", "nlptool", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def save_tiny_bart(tok_dir: Path, out: Path) -> Path:
    """A random 1-layer BART (seed 0) with the tiny BERT WordPiece tokenizer of ``tok_dir``, saved into ``out``: it
    stands in for a pretrained seq2seq checkpoint in the kg-qa tests."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration, BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(tok_dir)
    cfg = BartConfig(
        vocab_size=len(tok),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        decoder_start_token_id=tok.cls_token_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    torch.manual_seed(0)
    BartForConditionalGeneration(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def tiny_seq2seq_dir(tmp_path, tiny_bert_dir) -> Path:
    """:func:`save_tiny_bart` into ``tmp_path/bart``."""
    return save_tiny_bart(tiny_bert_dir, tmp_path / "bart")

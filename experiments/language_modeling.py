"""Word-level language modelling (Penn Treebank, WikiText-2, your own text, synthetic) with any cmopt optimizer.

    python -m experiments.language_modeling experiment=synthetic_lm      # embedded data, seconds on a CPU
    python -m experiments.language_modeling experiment=ptb_lstm_medium optimizer=sam_adam_cm
    python -m experiments.language_modeling -m optimizer=adam,adam_cg,adam_cm optimizer.lr=1e-3,3e-4 seed=0,1,2
    torchrun --nproc_per_node=4 -m experiments.language_modeling experiment=ptb_lstm_medium

Truncated backpropagation through time over contiguous streams: the engine carries the LSTM's hidden
state from window to window (detached), resets it at every epoch and evaluation, and saves it in
checkpoints. The checkpoint with the best validation perplexity is kept (best_model.pt); summary.json
reports test perplexity on it (test_ppl) and at the end (final_test_ppl).
"""

from __future__ import annotations

import sys
import math
from pathlib import Path

import hydra
from omegaconf import DictConfig
from torch import nn

from experiments.data.text import build_text_corpus, unigram_perplexity
from experiments.engine import Task, TrainResult, run_in_hydra, train
from experiments.engine.launcher import check_launcher
from experiments.models import shard_units
from experiments.models.language import build_language_model


def language_model_forward(model: nn.Module, batch, hidden):
    """Mean cross-entropy per token, the number of tokens, no other statistic, and the next hidden state."""
    tokens, targets = batch
    logits, hidden = model(tokens, hidden)
    loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return loss, targets.numel(), {}, hidden


def perplexity(metrics: dict[str, float]) -> dict[str, float]:
    return {"ppl": math.exp(metrics["loss"])} if "loss" in metrics else {}


def build_task(cfg: DictConfig) -> Task:
    corpus = build_text_corpus(**cfg.dataset, bptt=cfg.bptt)
    model = build_language_model(**cfg.model, vocab_size=corpus.vocab_size)
    reference = {"vocab_size": corpus.vocab_size, "train_tokens": len(corpus.train),
                 "unigram_ppl": unigram_perplexity(corpus.train.ids, corpus.vocab_size)}
    if corpus.entropy_rate is not None:
        reference["true_ppl"] = math.exp(corpus.entropy_rate)
    return Task(model=model, shard_units=shard_units(model), train_data=corpus.train, eval_data={"val": corpus.valid, "test": corpus.test},
                forward=language_model_forward, derive=perplexity,
                initial_state=lambda batch: model.initial_hidden(batch[0].shape[1]),
                select=(cfg.select.metric, cfg.select.mode), items="tokens",
                summarize=lambda evaluations, totals: {f"dataset_{k}": v for k, v in reference.items()})


def run(cfg: DictConfig, run_dir: str | Path) -> TrainResult:
    return train(cfg, build_task, run_dir)


@hydra.main(config_path="../configs/language_modeling", config_name="language_modeling", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_in_hydra(cfg, run)


if __name__ == "__main__":
    check_launcher(sys.argv[1:])
    main()

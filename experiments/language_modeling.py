"""Language modelling (Penn Treebank, WikiText-2/-103, your own text, synthetic) with any cmopt optimizer.

    python -m experiments.language_modeling experiment=synthetic_lm      # embedded data, seconds on a CPU
    python -m experiments.language_modeling experiment=ptb_lstm_medium optimizer=sam_adam_cm
    python -m experiments.language_modeling -m optimizer=adam,adam_cg,adam_cm optimizer.lr=1e-3,3e-4 seed=0,1,2
    torchrun --nproc_per_node=4 -m experiments.language_modeling experiment=ptb_lstm_medium
    torchrun --nproc_per_node=8 -m experiments.language_modeling experiment=wikitext103_gpt2_small trainer.strategy=fsdp

The LSTM: truncated backpropagation through time over contiguous streams; the engine carries its hidden
state from window to window (detached), resets it at every epoch and evaluation, and saves it in
checkpoints. The transformer: random windows of block_size + 1 tokens in training, no carried state;
evaluation scores every token once. The checkpoint with the best validation perplexity is kept
(best_model.pt); summary.json reports test perplexity on it (test_ppl) and at the end (final_test_ppl),
with bits per byte (test_bpb), which compare across tokenizers.
"""

from __future__ import annotations

import sys
import math
from pathlib import Path

import hydra
from omegaconf import DictConfig
import torch
from torch import nn

from experiments.data.text import (IGNORED, EvaluationWindows, RandomWindows, TextCorpus, build_text_corpus,
                                   unigram_perplexity)
from experiments.engine import Task, TrainResult, run_in_hydra, train
from experiments.engine.launcher import check_launcher
from experiments.models import shard_units
from experiments.models.language import build_language_model


class TokenLoss:
    """Mean cross-entropy per scored token, their number, and the statistic bytes_per_token (summed bytes of
    text the scored tokens stand for, per token once divided by the count), which gives bits per byte."""

    def __init__(self, token_bytes: torch.Tensor):
        self.token_bytes = token_bytes.float()  # whole numbers: exact in float32 for any batch
        self.on_device: dict[torch.device, torch.Tensor] = {}

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor):
        scored = targets != IGNORED
        count = scored.sum()
        # The sum over the count (at least 1): a batch that scores nothing has loss 0, not nan.
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                           ignore_index=IGNORED, reduction="sum") / count.clamp(min=1)
        if targets.device not in self.on_device:
            self.on_device[targets.device] = self.token_bytes.to(targets.device)
        text_bytes = (self.on_device[targets.device][targets.clamp(min=0)] * scored).sum()  # no host sync
        return loss, count, {"bytes_per_token": text_bytes}

    def recurrent(self, model: nn.Module, batch, hidden):
        """An LSTM's window (time, batch): the three, and the next hidden state."""
        tokens, targets = batch
        logits, hidden = model(tokens, hidden)
        return (*self(logits, targets), hidden)

    def windows(self, model: nn.Module, batch):
        """A transformer's windows (batch, time)."""
        tokens, targets = batch
        return self(model(tokens), targets)


def per_token_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Perplexity per token, and bits per byte = nats per token / (ln 2 x bytes per token)."""
    derived = {"ppl": math.exp(metrics["loss"])} if "loss" in metrics else {}
    if metrics.get("bytes_per_token"):
        derived["bpb"] = metrics["loss"] / (math.log(2) * metrics["bytes_per_token"])
    return derived


def build_task(cfg: DictConfig) -> Task:
    corpus = build_text_corpus(**cfg.dataset, bptt=cfg.bptt)
    model = build_language_model(**cfg.model, vocab_size=corpus.vocab_size)
    loss = TokenLoss(corpus.bytes_per_token_id())
    reference = {"vocab_size": corpus.vocab_size, "train_tokens": len(corpus.train), "tokenizer": corpus.tokenizer,
                 "unigram_ppl": unigram_perplexity(corpus.train.ids, corpus.vocab_size)}
    if corpus.entropy_rate is not None:
        reference["true_ppl"] = math.exp(corpus.entropy_rate)
    common = dict(model=model, shard_units=shard_units(model), derive=per_token_metrics,
                  select=(cfg.select.metric, cfg.select.mode), items="tokens",
                  summarize=lambda evaluations, totals: {f"dataset_{k}": v for k, v in reference.items()})
    if hasattr(model, "initial_hidden"):  # recurrent: contiguous streams, the hidden state carried
        return Task(train_data=corpus.train, eval_data={"val": corpus.valid, "test": corpus.test},
                    forward=loss.recurrent, initial_state=lambda batch: model.initial_hidden(batch[0].shape[1]),
                    **common)
    return Task(train_data=RandomWindows(corpus.train, model.block_size), eval_data=evaluation_windows(corpus, model),
                forward=loss.windows, **common)


def evaluation_windows(corpus: TextCorpus, model: nn.Module) -> dict[str, EvaluationWindows]:
    return {"val": EvaluationWindows(corpus.valid, model.block_size),
            "test": EvaluationWindows(corpus.test, model.block_size)}


def run(cfg: DictConfig, run_dir: str | Path) -> TrainResult:
    return train(cfg, build_task, run_dir)


@hydra.main(config_path="../configs/language_modeling", config_name="language_modeling", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_in_hydra(cfg, run)


if __name__ == "__main__":
    check_launcher(sys.argv[1:])
    main()

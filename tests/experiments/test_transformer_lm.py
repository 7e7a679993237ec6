"""model=transformer in the language-modelling runner, on the embedded Markov-chain text.

* The model: causal (a position's logits ignore later tokens), tied embeddings, its blocks are FSDP's units.
* The windows: training windows are contiguous block_size + 1 tokens; evaluation scores every token once,
  so the split's perplexity equals a plain token-by-token computation.
* Bits per byte: nats per token / (ln 2 x bytes per token), bytes counted by hand.
* It learns: validation perplexity within 10% of the chain's true perplexity.
* Bad settings (n_embd not divisible by n_head, a block longer than a split): one message, exit 1.
* 2 gloo processes under fsdp equal one process on the global batch (adam_cm, sam_adam_cm); a run killed
  with SIGKILL resumes bit for bit.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from experiments.engine.checkpoint import seed_everything
from experiments.data.text import (IGNORED, EvaluationWindows, RandomWindows, TokenStream, build_text_corpus,
                                   word_bytes)
from experiments.language_modeling import build_task, run
from experiments.models import shard_units
from experiments.models.language import build_language_model
from tests.experiments.image_runner_helpers import (
    check_killed_run_resumes_exactly, compose_runner_config, metrics_lines, run_cli)
from tests.experiments.test_fsdp_strategy import assert_close, assert_same_metrics, launch, pairs, rank0, run_dir

RUNNER = "experiments.language_modeling"
# 2,000 training tokens, windows of 16: 124 windows per epoch, 15 steps of 8.
TINY = ("experiment=synthetic_transformer", "dataset.train_tokens=2000", "dataset.eval_tokens=400",
        "model.n_layer=2", "model.n_head=2", "model.n_embd=16", "model.block_size=16", "trainer.batch_size=8",
        "trainer.eval_batch_size=8", "trainer.flatness_batch_size=4", "trainer.flatness_max_iter=5",
        "scheduler.warmup_steps=3")


def config(*overrides: str):
    return compose_runner_config("language_modeling", *TINY, *overrides)


def tiny_model(**options):
    return build_language_model("transformer", vocab_size=11, **{"n_layer": 2, "n_head": 2, "n_embd": 8,
                                                                 "block_size": 6, **options})


def test_a_position_sees_only_itself_and_the_past():
    torch.manual_seed(0)
    model = tiny_model().eval()
    tokens = torch.randint(11, (2, 6))
    changed = tokens.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % 11  # only positions 4 and 5 differ
    a, b = model(tokens), model(changed)
    assert a.shape == (2, 6, 11)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=0)
    assert not torch.allclose(a[:, 4], b[:, 4])


def test_the_output_layer_is_the_token_embedding_and_each_block_is_a_shard_unit():
    model = tiny_model(n_layer=3)
    assert model.decoder.weight is model.token_embedding.weight
    assert shard_units(model) == list(model.blocks) and len(model.blocks) == 3
    # GPT-2 small: 124M parameters with GPT-2's 50,257 tokens (counted once where tied).
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        gpt2 = build_language_model("transformer", vocab_size=50257)
    assert sum(p.numel() for p in gpt2.parameters()) == 124_439_808


def test_training_windows_are_contiguous_and_evaluation_scores_every_token_once():
    stream = TokenStream(torch.arange(100, 150), bptt=35, split="valid")
    torch.manual_seed(0)
    train = RandomWindows(stream, block_size=8)
    assert len(train) == 49 // 8
    for _ in range(20):
        inputs, targets = train[0]
        assert inputs.dtype == torch.long and inputs.shape == targets.shape == (8,)
        assert torch.equal(targets, inputs + 1) and 100 <= int(inputs[0]) <= 150 - 9  # contiguous, in range
    windows = EvaluationWindows(stream, block_size=8)
    assert len(windows) == math.ceil(49 / 8)  # 7 windows, the last one overlapping the sixth
    scored = [t[t != IGNORED] for _, t in (windows[k] for k in range(len(windows)))]
    assert torch.equal(torch.cat(scored), torch.arange(101, 150))
    inputs, targets = windows[6]
    assert torch.equal(inputs, torch.arange(141, 149)) and (targets[:7] == IGNORED).all()


def test_evaluation_perplexity_and_bits_per_byte_equal_a_token_by_token_computation(tmp_path):
    cfg = config("trainer.max_steps=4", "trainer.flatness_at_end=false")
    result = run(cfg, tmp_path).summary
    task = build_task(cfg)
    task.model.load_state_dict(torch.load(tmp_path / "best_model.pt", weights_only=True))
    task.model.eval()
    ids = build_text_corpus(**cfg.dataset, bptt=cfg.bptt).valid.ids
    block = cfg.model.block_size
    nats, text_bytes = 0.0, 0.0
    with torch.no_grad():  # every token t >= 1 scored with the (up to) block tokens before it, one at a time
        for t in range(1, len(ids)):
            start = min((t - 1) // block * block, len(ids) - 1 - block)  # its EvaluationWindows window
            context = ids[start: t].long()[None]
            logits = task.model(context)[0, -1].double()
            nats -= float(torch.log_softmax(logits, -1)[ids[t]])
            text_bytes += len(f"w{int(ids[t])}") + 1  # the word and the space after it
    n = len(ids) - 1
    assert result["final_val_ppl"] == pytest.approx(math.exp(nats / n), rel=1e-5)
    assert result["final_val_bpb"] == pytest.approx(nats / math.log(2) / text_bytes, rel=1e-5)
    assert result["dataset_tokenizer"] == "words"


def test_word_bytes_count_each_word_and_its_separator():
    assert word_bytes(("the", "<eos>", "café", "<unk>")).tolist() == [4, 0, 6, 6]


def test_the_tiny_transformer_learns_the_chain_to_near_its_true_perplexity(tmp_path):
    cfg = compose_runner_config("language_modeling", "experiment=synthetic_transformer", "optimizer=adam",
                                "trainer.flatness_at_end=false")
    result = run(cfg, tmp_path).summary
    true_ppl = result["dataset_true_ppl"]
    print(f"transformer: best val ppl {result['best_val_ppl']:.3f}, test {result['test_ppl']:.3f}, "
          f"true {true_ppl:.3f}, unigram {result['dataset_unigram_ppl']:.1f}")
    assert result["best_val_ppl"] < 1.10 * true_ppl and result["test_ppl"] < 1.10 * true_ppl
    assert result["best_val_ppl"] >= 0.97 * true_ppl


@pytest.mark.parametrize("overrides, message", [
    (("model.n_head=3",), r"model.n_embd=16 must be divisible by model.n_head=3"),
    (("model.block_size=400",), r"model.block_size=400 is longer than the valid split \(400 tokens\)"),
    (("model.block_size=0",), r"model.block_size=0 must be a positive integer"),
])
def test_bad_settings_are_refused_with_the_value_named(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(config(*overrides), tmp_path)


@pytest.mark.slow  # a process start (the in-process test above checks the message)
def test_on_the_command_line_a_bad_setting_is_one_message_and_exit_1(tmp_path):
    done = run_cli(*TINY, "model.n_head=3", f"runs_dir={tmp_path}", runner=RUNNER)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: model.n_embd=16 must be divisible by model.n_head=3")
    assert "Traceback" not in done.stderr


def test_every_evaluation_logs_perplexity_and_bits_per_byte_and_flatness_runs(tmp_path):
    # Flatness takes double backward, which the fused attention kernels lack (the engine uses the math one).
    result = run(config("trainer.max_steps=6", "trainer.log_interval=3", "trainer.eval_interval=3"), tmp_path)
    assert result.summary["top_hessian_eigenvalue"] > 0
    lines = [line for line in metrics_lines(tmp_path) if "val_ppl" in line]
    assert [line["step"] for line in lines] == [3, 6]
    for line in lines:
        assert line["val_bpb"] == pytest.approx(line["val_loss"] / math.log(2) / line["val_bytes_per_token"])
        assert line["train_ppl"] == pytest.approx(math.exp(line["train_loss"]))


# ---- 2 gloo processes under fsdp; SIGKILL and rerun -------------------------------------------------------

# model.bias=false: the attention's key bias has a gradient of exactly 0 in exact arithmetic (a constant added
# to every key's score leaves the softmax unchanged), so its float gradient is rounding noise, which Adam
# scales up to lr-sized steps that differ with the reduction order (measured: 8e-4 apart, every other weight
# within 2e-5). Without biases every parameter has a real gradient.
# fsdp against ddp on the same 2 processes: both average the same two gradients (measured gaps 1.5e-8 for
# adam_cm, 0 for sam_adam_cm, while the weights move by 2.7e-1).
FSDP_ATOL = 1e-6
LM = (*TINY, "trainer.max_steps=8", "trainer.log_interval=4", "trainer.checkpoint_interval=4",
      "trainer.flatness_at_end=false", "optimizer.lr=0.01", "optimizer.weight_decay=0.1",  # both param groups
      "model.bias=false")


def test_two_fsdp_processes_equal_two_ddp_processes(tmp_path):
    # Each block is its own fully_shard unit; the windows of the global batch are split over the processes.
    # Under either strategy SAM perturbs each process's weights with its own gradient, so ddp is the reference.
    optimizers = ("adam_cm", "sam_adam_cm")
    index = launch(tmp_path, pairs(optimizers), LM, runner=RUNNER, config=("language_modeling",))
    for name in optimizers:
        fsdp, ddp = index[f"fsdp {name}"], index[f"ddp {name}"]
        cfg = config(f"optimizer={name}", *LM[len(TINY):])
        seed_everything(cfg.seed)  # what the engine does before building the task
        initial = build_task(cfg).model.state_dict()
        assert_close(rank0(tmp_path, fsdp)["model"], rank0(tmp_path, ddp)["model"], initial, FSDP_ATOL, name)
        assert_same_metrics(run_dir(tmp_path, fsdp), run_dir(tmp_path, ddp), FSDP_ATOL)


@pytest.mark.slow  # three runs as separate processes
@pytest.mark.parametrize("optimizer", ["adam_cm", "sam_adam_cm"])
def test_a_killed_run_resumes_bit_for_bit(tmp_path, optimizer):
    args = lambda runs: [*TINY, f"runs_dir={tmp_path / runs}", f"optimizer={optimizer}", "trainer.epochs=2",
                         "trainer.checkpoint_interval=4", "trainer.log_interval=3", "model.dropout=0.2",
                         "optimizer.weight_decay=0.1"]  # dropout: the RNG must be restored too
    folder = Path("synthetic_transformer") / f"synthetic_lm_transformer_{optimizer}_seed0"
    _, _, _, saved = check_killed_run_resumes_exactly(tmp_path, args, folder, runner=RUNNER)
    assert saved["progress"]["batch"] != 0, "the kill should land mid-epoch"


def test_the_word_level_files_train_the_transformer_too(tmp_path):
    # PTB's format (words, <eos> per line), written here: the transformer reads its token stream in windows.
    rng = torch.Generator().manual_seed(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "<unk>"]
    for split, lines in (("train", 200), ("valid", 20), ("test", 20)):
        text = "\n".join(" ".join(words[int(i)] for i in torch.randint(len(words), (8,), generator=rng))
                         for _ in range(lines))
        (tmp_path / "ptb").mkdir(exist_ok=True)
        (tmp_path / "ptb" / f"ptb.{split}.txt").write_text(text + "\n")
    model = [o for o in TINY if o.startswith(("model.", "trainer."))]
    cfg = compose_runner_config("language_modeling", "experiment=synthetic_transformer", "dataset=ptb", *model,
                                f"data_dir={tmp_path}", "trainer.max_steps=3", "trainer.flatness_at_end=false")
    result = run(cfg, tmp_path / "run").summary
    assert result["status"] == "finished" and result["dataset_vocab_size"] == 8  # 7 words and <eos>
    # Words of 1-5 letters and their separators; <eos> stands for nothing more.
    assert 2 < result["val_bytes_per_token"] < 6 and result["val_bpb"] > 0


def interpolated_bigram_perplexity(train: torch.Tensor, valid: torch.Tensor, test: torch.Tensor, vocab: int):
    """Test perplexity of λ P(b | a) + (1 - λ) P(b) from the training counts (P(b) add-one smoothed), λ chosen
    on valid from 0, 0.05, ..., 0.95; and that λ."""
    train, valid, test = (x.long() for x in (train, valid, test))
    pairs = torch.zeros(vocab, vocab, dtype=torch.float64).index_put_(
        (train[:-1], train[1:]), torch.ones(len(train) - 1, dtype=torch.float64), accumulate=True)
    unigram = (torch.bincount(train, minlength=vocab).double() + 1) / (len(train) + vocab)
    conditional = pairs / pairs.sum(1, keepdim=True).clamp(min=1)

    def perplexity(ids, lam):
        return math.exp(-float((lam * conditional[ids[:-1], ids[1:]] + (1 - lam) * unigram[ids[1:]]).log().mean()))

    lam = min((k / 20 for k in range(20)), key=lambda k: perplexity(valid, k))
    return perplexity(test, lam), lam


@pytest.mark.slow  # about 5 minutes on 2 idle cores: 400 steps of windows of 128
def test_on_real_text_the_transformer_beats_an_interpolated_bigram(tmp_path):
    # Real text at hand offline: this repository's README, docs and Python sources (430 kB), as a text folder.
    repo = Path(__file__).resolve().parents[2]
    for path in [repo / "README.md", *(repo / "docs").glob("*.md"), *(repo / "cmopt").glob("*.py"),
                 *(repo / "experiments").rglob("*.py")]:
        (tmp_path / "text" / path.relative_to(repo).with_suffix(".txt")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "text" / path.relative_to(repo).with_suffix(".txt")).write_text(path.read_text())
    data = ("dataset=text_folder", f"dataset.root={tmp_path / 'text'}", "dataset.vocab_size=1024",
            "dataset.valid_fraction=0.02", "dataset.test_fraction=0.02")
    cfg = compose_runner_config("language_modeling", "experiment=synthetic_transformer", *data, "optimizer=adam",
                                "optimizer.lr=3e-3", "model.n_embd=128", "model.n_head=4", "model.block_size=128",
                                "model.dropout=0.1", "trainer.epochs=5", "trainer.flatness_at_end=false")
    result = run(cfg, tmp_path / "run").summary
    corpus = build_text_corpus(**cfg.dataset, bptt=cfg.bptt)
    bigram, lam = interpolated_bigram_perplexity(corpus.train.ids, corpus.valid.ids, corpus.test.ids, corpus.vocab_size)
    print(f"real text ({result['dataset_train_tokens']} training tokens, BPE 1024): transformer test ppl "
          f"{result['test_ppl']:.2f} ({result['test_bpb']:.3f} bits per byte), interpolated bigram {bigram:.2f} "
          f"(λ = {lam:.2f}), unigram {result['dataset_unigram_ppl']:.1f}")
    assert result["test_ppl"] < bigram

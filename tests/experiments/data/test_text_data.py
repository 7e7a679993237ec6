"""Text corpora: the word-level format (vocabulary, <eos>, <unk>), batchify and windows, column shards, the
Markov chain's closed-form entropy rate, and the messages for missing files and bad settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from experiments.data.text import (
    DatasetNotFoundError, build_text_corpus, entropy_rate, markov_chain, sample_chain, unigram_perplexity)

TRAIN = "the cat sat\n the dog <unk> sat \nthe end\n"
VALID = "the cat ran\n"  # "ran" is not in the training vocabulary: it becomes <unk>
TEST = "dog sat\n"


def write_ptb(folder, names=("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"), train=TRAIN, valid=VALID):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in zip(names, (train, valid, TEST)):
        (folder / name).write_text(text)


def test_ptb_files_give_the_vocabulary_eos_and_token_counts_by_hand(tmp_path):
    write_ptb(tmp_path / "ptb")
    corpus = build_text_corpus("ptb", root=str(tmp_path / "ptb"))
    # Words in order of first appearance in train, <eos> after each of the 3 lines.
    assert corpus.vocabulary == ("the", "cat", "sat", "<eos>", "dog", "<unk>", "end")
    assert [len(corpus.train), len(corpus.valid), len(corpus.test)] == [3 + 1 + 4 + 1 + 2 + 1, 4, 3]
    words = [corpus.vocabulary[i] for i in corpus.train.ids]
    assert words.count("<eos>") == 3
    assert [corpus.vocabulary[i] for i in corpus.valid.ids] == ["the", "cat", "<unk>", "<eos>"]
    assert [corpus.vocabulary[i] for i in corpus.test.ids] == ["dog", "sat", "<eos>"]


def test_the_critical_gradients_file_names_are_read_too(tmp_path):
    write_ptb(tmp_path, names=("train.txt", "valid.txt", "test.txt"))
    assert len(build_text_corpus("ptb", root=str(tmp_path)).train) == 12


def test_an_unknown_word_without_unk_in_the_vocabulary_is_an_error(tmp_path):
    write_ptb(tmp_path, train="the cat sat\n")
    with pytest.raises(ValueError, match=r"valid split has the word 'ran' \(line 1\).*no <unk>"):
        build_text_corpus("ptb", root=str(tmp_path))


def test_missing_files_name_the_folder_the_files_and_where_to_get_them(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=rf"no ptb.train.txt or train.txt, .* in {tmp_path}.*lstm"):
        build_text_corpus("ptb", root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"wiki.train.tokens"):
        build_text_corpus("wikitext2", root=str(tmp_path))


def test_wikitext_tokens_files_and_a_text_folder_through_datasets(tmp_path):
    for split, text in zip(("train", "valid", "test"), (TRAIN, VALID, TEST)):
        (tmp_path / f"wiki.{split}.tokens").write_text(text)
        (tmp_path / f"{split}.txt").write_text(text)
    wiki = build_text_corpus("wikitext2", root=str(tmp_path))
    own = build_text_corpus("text", root=str(tmp_path))  # load_dataset("text", ...): one example per line
    assert wiki.vocabulary == own.vocabulary
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(wiki, split).ids, getattr(own, split).ids)


def test_batchify_cuts_columns_and_windows_with_a_short_last_window():
    corpus = build_text_corpus("synthetic_lm", bptt=4, train_tokens=103, eval_tokens=10)
    ids = corpus.train.ids
    windows = corpus.train.batches(batch_size=5, rank=0, world_size=1)
    # 103 tokens in 5 columns: 20 per column (3 dropped); windows start at 0, 4, ..., 16 over 19 targets.
    assert len(windows) == 5
    assert [tuple(x.shape) for x, _ in windows] == [(4, 5)] * 4 + [(3, 5)]
    columns = ids[:100].view(5, 20).t()  # column j is ids[20 j: 20 (j + 1)]
    for k, (inputs, targets) in enumerate(windows):
        assert torch.equal(inputs, columns[4 * k: 4 * k + inputs.shape[0]])
        assert torch.equal(targets, columns[4 * k + 1: 4 * k + 1 + inputs.shape[0]])
    assert torch.equal(windows[1:][0][0], windows[1][0])  # slices (a resumed epoch skips windows)


def test_each_process_takes_its_own_contiguous_columns_of_the_global_batch():
    stream = build_text_corpus("synthetic_lm", bptt=7, train_tokens=500, eval_tokens=10).train
    whole = stream.batches(6, 0, 1)
    parts = [stream.batches(6, r, 2) for r in (0, 1)]
    for k in range(len(whole)):
        for i in (0, 1):  # inputs, targets
            assert torch.equal(torch.cat([parts[0][k][i], parts[1][k][i]], dim=1), whole[k][i])
    uneven = [stream.batches(5, r, 2)[0][0].shape[1] for r in (0, 1)]  # evaluation may split unevenly
    assert uneven == [3, 2]


def test_bad_settings_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match=r"bptt=0 must be a positive integer"):
        build_text_corpus("synthetic_lm", bptt=0)
    stream = build_text_corpus("synthetic_lm", bptt=5, train_tokens=100, eval_tokens=10).train
    with pytest.raises(ValueError, match=r"batch of 60 columns is too large for the train split of 100 tokens.*"
                                         r"Lower trainer.batch_size"):
        stream.batches(60, 0, 1)
    with pytest.raises(ValueError, match=r"Unknown dataset 'cifar10'. Valid names for language modelling"):
        build_text_corpus("cifar10")
    with pytest.raises(ValueError, match=r"does not take option\(s\) vocab"):
        build_text_corpus("synthetic_lm", vocab=3)


def test_the_chain_entropy_rate_matches_the_sampled_log_likelihood():
    # Closed form -sum_i pi_i sum_j P_ij log P_ij against the average -log P(x_t | x_t-1) of a long sample.
    transitions, stationary = markov_chain(20, 3, seed=5)
    assert np.allclose(stationary @ transitions, stationary) and np.isclose(stationary.sum(), 1)
    tokens = sample_chain(transitions, stationary, 200_000, np.random.default_rng(0))
    sampled = -np.log(transitions[tokens[:-1], tokens[1:]]).mean()
    assert entropy_rate(transitions, stationary) == pytest.approx(sampled, rel=0.01)
    # A chain whose every row is uniform over all words: H = log V exactly.
    uniform = np.full((8, 8), 1 / 8)
    assert entropy_rate(uniform, np.full(8, 1 / 8)) == pytest.approx(math.log(8), rel=1e-12)


def test_unigram_perplexity_of_a_hand_made_stream():
    # Frequencies 1/2, 1/4, 1/4: entropy 1.5 bits.
    assert unigram_perplexity(torch.tensor([0, 0, 1, 2]), 5) == pytest.approx(2 ** 1.5)

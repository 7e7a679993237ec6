"""Subword corpora (experiments/data/subword.py): a folder of text and WikiText-103's raw files, written here.

* The token files decode back to exactly each split's text, and the bytes per token add up to its UTF-8 size.
* The BPE is trained on the training part only, saved beside the data and reused; token files are rebuilt
  when the text changes.
* Bad settings: an unreachable vocabulary, one below the byte alphabet, an empty folder, GPT-2's tokenizer
  offline, missing WikiText-103 files: one message naming the value and the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.data.text import DatasetNotFoundError, build_text_corpus
from experiments.options import UserError

WORDS = "the cat sat on a mat and then it ran to the door of the café where a dog slept".split()


def write_folder(folder, documents=3, lines=200, seed=0):
    rng = np.random.default_rng(seed)
    texts = []
    for d in range(documents):
        text = "\n".join(" ".join(rng.choice(WORDS, size=10)) for _ in range(lines))
        (folder / "docs").mkdir(parents=True, exist_ok=True)
        (folder / "docs" / f"doc{d}.txt").write_text(text, encoding="utf-8")
        texts.append(text)
    return [line + "\n" for text in texts for line in text.splitlines()]


def folder_corpus(root, **options):
    return build_text_corpus("text_folder", root=str(root), **{"vocab_size": 300, "valid_fraction": 0.05,
                                                                "test_fraction": 0.05, **options})


def decode(root, tag, ids):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(root / "tokenized" / tag / "tokenizer.json")).decode(ids.long().tolist())


def test_a_text_folder_in_token_files_decodes_back_to_each_split(tmp_path):
    lines = write_folder(tmp_path)
    corpus = folder_corpus(tmp_path)
    assert corpus.vocab_size == 300 and corpus.tokenizer == "bpe300"
    # 600 lines: the last 5% (30) are test, the 30 before them valid.
    expected = {"train": lines[:540], "valid": lines[540:570], "test": lines[570:]}
    for split, stream in zip(("train", "valid", "test"), (corpus.train, corpus.valid, corpus.test)):
        assert stream.ids.dtype == torch.uint16  # 300 tokens fit in 16 bits
        on_disk = np.fromfile(tmp_path / "tokenized" / "bpe300" / f"{split}.bin", dtype=np.uint16)
        assert np.array_equal(on_disk, stream.ids.numpy())
        text = "".join(expected[split])
        assert decode(tmp_path, "bpe300", stream.ids) == text
        assert float(corpus.token_bytes[stream.ids.long()].sum()) == len(text.encode("utf-8"))  # é is 2 bytes


def test_the_tokenizer_is_trained_once_and_reused_until_the_text_changes(tmp_path):
    write_folder(tmp_path)
    first = folder_corpus(tmp_path)
    saved = tmp_path / "tokenized" / "bpe300" / "tokenizer.json"
    stamp = saved.stat().st_mtime_ns
    again = folder_corpus(tmp_path)
    assert saved.stat().st_mtime_ns == stamp and torch.equal(first.train.ids, again.train.ids)
    write_folder(tmp_path, lines=250, seed=1)  # new text: new tokenizer, new token files
    changed = folder_corpus(tmp_path)
    assert saved.stat().st_mtime_ns != stamp and len(changed.train) != len(first.train)


def test_a_wikitext103_folder_of_raw_files(tmp_path):
    lines = write_folder(tmp_path / "source")
    for split, part in (("train", lines[:500]), ("valid", lines[500:550]), ("test", lines[550:])):
        (tmp_path / f"wiki.{split}.raw").write_text("".join(part), encoding="utf-8")
    corpus = build_text_corpus("wikitext103", root=str(tmp_path), vocab_size=280)
    assert decode(tmp_path, "bpe280", corpus.valid.ids) == "".join(lines[500:550])
    assert corpus.vocab_size == 280


def test_wikitext103_through_datasets_is_tokenized_once_then_read_offline(tmp_path, monkeypatch):
    import experiments.data.text as text

    lines = write_folder(tmp_path / "source")
    asked = []

    def hub_lines(path, config, field, root, name, revision=None):  # the Hub's rows: lines with their newlines
        asked.append((path, config, field))
        return {"train": lines[:500], "valid": lines[500:550], "test": lines[550:]}

    monkeypatch.setattr(text, "hub_lines", hub_lines)
    fetched = build_text_corpus("wikitext103", root=str(tmp_path), download=True, vocab_size=280)
    assert asked == [("Salesforce/wikitext", "wikitext-103-raw-v1", "text")]
    assert decode(tmp_path, "bpe280", fetched.test.ids) == "".join(lines[550:])
    again = build_text_corpus("wikitext103", root=str(tmp_path), download=False, vocab_size=280)  # offline now
    assert len(asked) == 1 and torch.equal(again.train.ids, fetched.train.ids)


@pytest.mark.parametrize("options, message", [
    ({"vocab_size": 100_000}, r"dataset.vocab_size=100000 cannot be reached: .* stops at \d+ tokens.*"
                              r"Use dataset.vocab_size=\d+ or less"),
    ({"vocab_size": 200}, r"dataset.vocab_size=200 must be an integer above 256"),
    ({"tokenizer": "gpt2", "vocab_size": 300}, r"dataset.vocab_size=300 cannot be set with dataset.tokenizer=gpt2"),
    ({"tokenizer": "words"}, r"dataset.tokenizer='words' is not a tokenizer here; use bpe"),
    ({"valid_fraction": 0.7}, r"dataset.valid_fraction=0.7 must be in \(0, 0.5\)"),
])
def test_bad_tokenizer_settings_name_the_value_and_the_fix(tmp_path, options, message):
    write_folder(tmp_path, documents=1, lines=20)
    with pytest.raises(UserError, match=message):
        folder_corpus(tmp_path, **options)


def test_an_empty_folder_says_what_to_put_there(tmp_path):
    with pytest.raises(UserError, match=r"has no files matching dataset.pattern='\*\*/\*.txt'. Put text files"):
        folder_corpus(tmp_path)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match=r"has only empty files matching"):
        folder_corpus(tmp_path)


def test_offline_gpt2_and_missing_wikitext103_say_what_to_do(tmp_path, monkeypatch):
    import tokenizers

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(tokenizers.Tokenizer, "from_pretrained", staticmethod(offline))
    write_folder(tmp_path, documents=1, lines=20)
    with pytest.raises(DatasetNotFoundError, match=r"could not fetch GPT-2's tokenizer .* use dataset.tokenizer=bpe"):
        folder_corpus(tmp_path, tokenizer="gpt2", vocab_size=None)
    with pytest.raises(DatasetNotFoundError, match=r"no wiki.train.raw, wiki.valid.raw, wiki.test.raw in .*"
                                                   r"dataset.download=true"):
        build_text_corpus("wikitext103", root=str(tmp_path / "none"))
